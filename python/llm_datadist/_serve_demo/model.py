# SPDX-License-Identifier: Apache-2.0
"""A small decoder-only transformer with a paged KV cache (torch; seeded random weights).

The KV cache is a list of 2 * num_layers tensors [num_blocks, block_size, kv_heads, head_dim]
in the order K0, V0, K1, V1, ... (views of one llm_datadist blocks cache in the workers). A
request owns a block table; token at position p lives in block table[p // block_size], slot
p % block_size. The same two functions serve the monolithic run and both disaggregated roles:

    prefill(tokens, kv, table)               -> first token      writes positions 0..n-1
    decode_step(token, pos, kv, table)       -> next token       writes position pos

Greedy decoding; one request at a time (batch 1), so results do not depend on batching.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Sequence

import torch

__all__ = ["ModelConfig", "TinyDecoder", "new_kv", "generate_monolithic", "BlockAllocator", "make_prompts",
           "kv_digest"]


@dataclass(frozen=True)
class ModelConfig:
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4            # MHA; fewer than num_heads gives GQA
    head_dim: int = 32
    vocab_size: int = 512
    ffn_dim: int = 256
    max_positions: int = 1024
    block_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads must divide num_heads ({self.num_heads}), but got {self.num_kv_heads}")

    @property
    def hidden(self) -> int:
        return self.num_heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)


def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


class TinyDecoder:
    def __init__(self, cfg: ModelConfig, device: str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(cfg.seed)
        h, kvd = cfg.hidden, cfg.num_kv_heads * cfg.head_dim

        def w(*shape: int, scale: float) -> torch.Tensor:
            return (torch.randn(*shape, generator=g) * scale).to(self.device)

        self.embed = w(cfg.vocab_size, h, scale=1.0)
        self.pos = w(cfg.max_positions, h, scale=0.5)
        self.layers = []
        for _ in range(cfg.num_layers):
            self.layers.append({
                "ln1": torch.ones(h, device=self.device), "ln2": torch.ones(h, device=self.device),
                "wq": w(h, h, scale=1 / math.sqrt(h)), "wk": w(h, kvd, scale=1 / math.sqrt(h)),
                "wv": w(h, kvd, scale=1 / math.sqrt(h)), "wo": w(h, h, scale=1 / math.sqrt(h)),
                "w1": w(h, cfg.ffn_dim, scale=1 / math.sqrt(h)), "w2": w(cfg.ffn_dim, h, scale=1 / math.sqrt(cfg.ffn_dim)),
            })
        self.ln_f = torch.ones(h, device=self.device)
        self.lm_head = w(h, cfg.vocab_size, scale=1 / math.sqrt(h))

    @torch.no_grad()
    def forward(self, tokens: Sequence[int], start: int, kv: List[torch.Tensor], table: Sequence[int]) -> torch.Tensor:
        """Runs tokens at positions start..start+len-1, attending to positions 0..its own
        through the paged cache (whose positions < start must hold this request's KV). Writes
        the new positions' K and V. Returns the logits of the last position."""
        cfg = self.cfg
        n = len(tokens)
        total = start + n
        bs = cfg.block_size
        pos = torch.arange(start, total, device=self.device)
        tok = torch.tensor(list(tokens), dtype=torch.long, device=self.device)
        blk = torch.tensor(list(table), dtype=torch.long, device=self.device)
        all_pos = torch.arange(total, device=self.device)
        w_blocks, w_slots = blk[pos // bs], pos % bs
        r_blocks, r_slots = blk[all_pos // bs], all_pos % bs
        mask = all_pos[None, :] > pos[:, None]                            # [n, total]: future positions
        x = self.embed[tok] + self.pos[pos]
        groups = cfg.num_heads // cfg.num_kv_heads
        for i, L in enumerate(self.layers):
            hdn = _rms(x, L["ln1"])
            q = (hdn @ L["wq"]).view(n, cfg.num_heads, cfg.head_dim)
            k = (hdn @ L["wk"]).view(n, cfg.num_kv_heads, cfg.head_dim)
            v = (hdn @ L["wv"]).view(n, cfg.num_kv_heads, cfg.head_dim)
            kc, vc = kv[2 * i], kv[2 * i + 1]
            kc[w_blocks, w_slots] = k
            vc[w_blocks, w_slots] = v
            ka = kc[r_blocks, r_slots].repeat_interleave(groups, dim=1)    # [total, heads, d]
            va = vc[r_blocks, r_slots].repeat_interleave(groups, dim=1)
            scores = torch.einsum("nhd,thd->hnt", q, ka) / math.sqrt(cfg.head_dim)
            scores = scores.masked_fill(mask[None], float("-inf"))
            att = torch.einsum("hnt,thd->nhd", scores.softmax(-1), va).reshape(n, cfg.hidden)
            x = x + att @ L["wo"]
            x = x + torch.nn.functional.gelu(_rms(x, L["ln2"]) @ L["w1"]) @ L["w2"]
        return _rms(x[-1], self.ln_f) @ self.lm_head

    def prefill(self, prompt: Sequence[int], kv: List[torch.Tensor], table: Sequence[int]) -> int:
        return int(self.forward(prompt, 0, kv, table).argmax())

    def decode_step(self, token: int, pos: int, kv: List[torch.Tensor], table: Sequence[int]) -> int:
        return int(self.forward([token], pos, kv, table).argmax())


def new_kv(cfg: ModelConfig, num_blocks: int, device: str = "cpu") -> List[torch.Tensor]:
    return [torch.zeros(num_blocks, cfg.block_size, cfg.num_kv_heads, cfg.head_dim, device=device)
            for _ in range(2 * cfg.num_layers)]


class BlockAllocator:
    """A free list of block ids (lowest first, so runs are reproducible)."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks))

    def alloc(self, n: int) -> List[int]:
        if n > len(self._free):
            raise MemoryError(f"need {n} blocks, {len(self._free)} free of {self.num_blocks}")
        self._free.sort()
        out, self._free = self._free[:n], self._free[n:]
        return out

    def free(self, blocks: Sequence[int]) -> None:
        self._free.extend(blocks)

    @property
    def free_count(self) -> int:
        return len(self._free)


def generate_monolithic(model: TinyDecoder, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                        num_blocks: int = 64) -> List[List[int]]:
    """The reference: every prompt prefilled and decoded in this one process."""
    cfg = model.cfg
    kv = new_kv(cfg, num_blocks, str(model.device))
    out = []
    for prompt in prompts:
        table = list(range(-(-(len(prompt) + max_new_tokens) // cfg.block_size)))
        tok = model.prefill(prompt, kv, table)
        toks = [tok]
        for step in range(max_new_tokens - 1):
            tok = model.decode_step(tok, len(prompt) + step, kv, table)
            toks.append(tok)
        out.append(toks)
    return out


def make_prompts(n: int, seed: int, vocab: int, min_len: int = 3, max_len: int = 90) -> List[List[int]]:
    g = torch.Generator().manual_seed(1000 + seed)
    lens = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return [torch.randint(0, vocab, (L,), generator=g).tolist() for L in lens]


def kv_digest(kv: List[torch.Tensor], blocks: Sequence[int]) -> str:
    """sha256 of the given blocks' bytes, every tensor, in block order (whole blocks)."""
    import hashlib
    h = hashlib.sha256()
    idx = torch.tensor(list(blocks), dtype=torch.long, device=kv[0].device)
    for t in kv:
        h.update(t[idx].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
