# SPDX-License-Identifier: Apache-2.0
"""One side of a disaggregated vLLM pair, as a test worker process: vLLM's real ``Scheduler``
built with ``LLMDataDistConnector`` (loaded by vLLM's factory from the module path), and a
worker-side connector over CPU tensors standing in for the GPU KV cache.

    python -m vllm_side        (JSON requests on stdin, one JSON answer per line on stdout)

The model runner is a stand-in: for every token a step schedules it writes a pattern that
names the writer (prefill or decode), the request, the layer, K or V and the token position
into that token's slot, then reports what the connector says, exactly as vLLM's GPU runner
does (bind metadata, start_load_kv, wait_for_save, get_finished, load errors, clear).

ops: init {role, engine_id, port, layout, extra, ...} -> {handshake_hash}
     prefill {request_id, prompt} -> {kv_transfer_params, block_ids, digest}
     decode {request_id, prompt, kv_transfer_params, deadline_s} -> {tokens, digest_at_load, ...}
     step {until_freed, deadline_s} -> {free_blocks, freed: [...], expired: [...]}
Between requests the process keeps stepping its scheduler while it holds requests, as vLLM's
engine core does.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

BLOCK_SIZE = 16
NUM_BLOCKS = 64
LAYERS = 2
KV_HEADS = 2
HEAD = 16


def pattern(writer: int, seed: int, layer: int, kv: int, pos: int) -> "Any":
    """The bytes a model run writes for one token slot: every value names who wrote it."""
    import torch
    base = writer * 1_000_000 + seed * 1_000 + pos
    return (torch.arange(KV_HEADS * HEAD, dtype=torch.float32).reshape(KV_HEADS, HEAD) * 1e-3
            + base + layer * 0.25 + kv * 0.125)


def _seed(request_id: str) -> int:
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:2], "little") % 997


class Side:
    def __init__(self) -> None:
        self.sched: Any = None
        self.conn: Any = None
        self.kv: Dict[str, Any] = {}
        self.layout = "flash_attn"
        self.writer = 0
        self.freed: List[str] = []
        self.recv_digests: Dict[str, str] = {}
        self.load_errors: List[int] = []
        self.loaded_at: Dict[str, float] = {}
        self.device_sync: Any = None

    # -- setup ------------------------------------------------------------------------------
    def init(self, role: str, engine_id: str, port: int, layout: str = "flash_attn", extra: Optional[dict] = None,
             kv_heads: int = KV_HEADS, device: str = "cpu") -> Dict[str, Any]:
        import torch
        from transformers import LlamaConfig
        from vllm.config import (CacheConfig, DeviceConfig, KVTransferConfig, ModelConfig, SchedulerConfig,
                                 VllmConfig)
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
        from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
        from vllm.v1.structured_output import StructuredOutputManager

        self.writer = 1 if role == "prefill" else 2
        self.layout = layout
        model_dir = tempfile.mkdtemp(prefix="llmdd-vllm-model-")
        cfg = LlamaConfig(hidden_size=KV_HEADS * HEAD * 2, num_attention_heads=KV_HEADS * 2,
                          num_key_value_heads=kv_heads, num_hidden_layers=LAYERS, intermediate_size=128,
                          vocab_size=1000, max_position_embeddings=256, head_dim=HEAD)
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(model_dir)
        ktc = KVTransferConfig(kv_connector="LLMDataDistConnector",
                               kv_connector_module_path="llm_datadist.integrations.vllm",
                               kv_role="kv_producer" if role == "prefill" else "kv_consumer",
                               engine_id=engine_id, kv_port=port,
                               kv_load_failure_policy="recompute", kv_connector_extra_config=extra or {})
        vcfg = VllmConfig(model_config=ModelConfig(model=model_dir, skip_tokenizer_init=True, dtype="float32",
                                                   max_model_len=256),
                          cache_config=CacheConfig(block_size=BLOCK_SIZE),
                          scheduler_config=SchedulerConfig(max_num_batched_tokens=256, max_num_seqs=8,
                                                           max_model_len=256, is_encoder_decoder=False),
                          kv_transfer_config=ktc, device_config=DeviceConfig("cpu"))
        vcfg.cache_config.num_gpu_blocks = NUM_BLOCKS
        names = [f"model.layers.{i}.self_attn.attn" for i in range(LAYERS)]
        kcc = KVCacheConfig(num_blocks=NUM_BLOCKS, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(
            names, FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=kv_heads, head_size=HEAD,
                                     dtype=torch.float32))])
        self.sched = Scheduler(vllm_config=vcfg, kv_cache_config=kcc, structured_output_manager=StructuredOutputManager(vcfg),
                               block_size=BLOCK_SIZE, log_stats=True)
        self.conn = KVConnectorFactory.create_connector(vcfg, KVConnectorRole.WORKER, kcc)
        for n in names:        # the attention backends' shapes, as vLLM allocates them
            if layout == "flash_attn":
                self.kv[n] = torch.zeros(2, NUM_BLOCKS, BLOCK_SIZE, kv_heads, HEAD, device=device)
            else:              # flashinfer
                self.kv[n] = torch.zeros(NUM_BLOCKS, 2, BLOCK_SIZE, kv_heads, HEAD, device=device)
        if device.startswith("cuda"):
            self.device_sync = torch.cuda.synchronize
        self.conn.register_kv_caches(self.kv)
        hs = self.conn.get_handshake_metadata()
        self.sched.connector.set_xfer_handshake_metadata({0: hs})
        return {"handshake_hash": hs.payload["compatibility_hash"],
                "connector": type(self.sched.connector).__module__ + "." + type(self.sched.connector).__name__,
                "free_blocks": self._free_blocks()}

    def link_transports(self) -> Dict[str, str]:
        dd = self.conn.datadist
        return {str(c): dd.link_info(c)["transport"] for c in self.conn.worker.agents}

    # -- the stand-in model runner ----------------------------------------------------------------
    def _slot(self, name: str, kv: int, block: int, off: int) -> Any:
        t = self.kv[name]
        return t[kv, block, off] if self.layout == "flash_attn" else t[block, kv, off]

    def _free_blocks(self) -> int:
        return self.sched.kv_cache_manager.block_pool.get_num_free_blocks()

    def block_ids(self, rid: str) -> List[int]:
        return list(self.sched.kv_cache_manager.get_block_ids(rid)[0])

    def digest(self, blocks: List[int]) -> str:
        h = hashlib.sha256()
        for name in self.kv:
            for kv in (0, 1):
                for b in blocks:
                    t = self.kv[name][kv, b] if self.layout == "flash_attn" else self.kv[name][b, kv]
                    h.update(t.contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def step(self) -> Any:
        from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
        out = self.sched.schedule()
        self.conn.bind_connector_metadata(out.kv_connector_metadata)
        self.conn.start_load_kv(None)
        req_ids = list(out.num_scheduled_tokens)
        scheduled = {rid: (self._computed_before(out, rid), n) for rid, n in out.num_scheduled_tokens.items()}
        for li, name in enumerate(self.kv):        # layer by layer, as a model's forward goes
            for rid, (start, n) in scheduled.items():
                blocks = self.block_ids(rid)
                for pos in range(start, start + n):
                    for kv in (0, 1):
                        slot = self._slot(name, kv, blocks[pos // BLOCK_SIZE], pos % BLOCK_SIZE)
                        slot.copy_(pattern(self.writer, _seed(rid), li, kv, pos).to(slot.device))
            if scheduled:
                self.conn.save_kv_layer(name, self.kv[name], None)
        self.conn.wait_for_save()
        if self.device_sync is not None:
            self.device_sync()                   # the stand-in model's writes land before a peer reads
        sending, recving = self.conn.get_finished(set(out.finished_req_ids))
        for rid in recving or ():
            # taken before anything of this request is computed here: the bytes the load brought
            self.recv_digests[rid] = self.digest(self.block_ids(rid)[:self._prompt_blocks(rid)])
            self.loaded_at[rid] = time.time()
        bad = self.conn.get_block_ids_with_load_errors()
        self.load_errors.extend(sorted(bad))
        self.conn.clear_connector_metadata()
        self.freed.extend(sorted(sending or ()))
        mro = ModelRunnerOutput(req_ids=req_ids,
                                sampled_token_ids=[[7] for _ in req_ids],
                                kv_connector_output=KVConnectorOutput(finished_sending=sending,
                                                                      finished_recving=recving,
                                                                      invalid_block_ids=bad))
        outputs = self.sched.update_from_output(out, mro)
        done = [o for eco in outputs.values() for o in eco.outputs if o.finish_reason is not None]
        return scheduled, done

    def _prompt_blocks(self, rid: str) -> int:
        req = self.sched.requests[rid]
        return -(-len(req.prompt_token_ids) // BLOCK_SIZE)

    @staticmethod
    def _computed_before(out: Any, rid: str) -> int:
        for nr in out.scheduled_new_reqs:
            if nr.req_id == rid:
                return nr.num_computed_tokens
        c = out.scheduled_cached_reqs
        return c.num_computed_tokens[c.req_ids.index(rid)]

    def _request(self, rid: str, prompt: List[int], params: Dict[str, Any], max_tokens: int) -> Any:
        from vllm import SamplingParams
        from vllm.v1.request import Request
        sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True, extra_args={"kv_transfer_params": params})
        return Request(rid, prompt, sp, None)

    # -- ops --------------------------------------------------------------------------------
    def prefill(self, request_id: str, prompt: List[int], deadline_s: float = 30.0,
                kv_transfer_params: Optional[Dict[str, Any]] = None, max_tokens: int = 1,
                abort_after_prompt: bool = False) -> Dict[str, Any]:
        """Pull mode by default; push mode with kv_transfer_params naming the decode.
        abort_after_prompt: once the prompt is computed (the request still running, max_tokens
        > 1), abort it as a client disconnect does, and report the free blocks right after."""
        from vllm.v1.request import RequestStatus
        params_in = kv_transfer_params or {"do_remote_decode": True}
        self.sched.add_request(self._request(request_id, prompt, params_in, max_tokens))
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            _, done = self.step()
            req = self.sched.requests.get(request_id)
            if abort_after_prompt and req is not None and req.num_computed_tokens >= len(prompt):
                self.sched.finish_requests(request_id, RequestStatus.FINISHED_ABORTED)
                return {"aborted": True, "free_blocks": self._free_blocks()}
            for o in done:
                if o.request_id == request_id:
                    params = o.kv_transfer_params    # None in push mode: nothing for a client
                    blocks = (params["remote_block_ids"] if params
                              else self.block_ids(request_id)[:self._prompt_blocks(request_id)])
                    return {"kv_transfer_params": params, "block_ids": blocks, "digest": self.digest(blocks),
                            "free_blocks": self._free_blocks(), "finish_reason": str(o.finish_reason)}
        raise TimeoutError(f"prefill of {request_id} did not finish in {deadline_s} s")

    def decode(self, request_id: str, prompt: List[int], kv_transfer_params: Dict[str, Any],
               deadline_s: float = 30.0, max_tokens: int = 2) -> Dict[str, Any]:
        self.sched.add_request(self._request(request_id, prompt, kv_transfer_params, max_tokens))
        statuses, computed = [], []
        end = time.monotonic() + deadline_s
        t0 = time.time()
        while time.monotonic() < end:
            req = self.sched.requests.get(request_id)
            if req is not None and (not statuses or statuses[-1] != req.status.name):
                statuses.append(req.status.name)
            scheduled, done = self.step()
            if request_id in scheduled:
                computed.append(list(scheduled[request_id]))
            if any(o.request_id == request_id for o in done):
                break
            if not scheduled:
                time.sleep(0.002)
        else:
            raise TimeoutError(f"decode of {request_id} did not finish in {deadline_s} s; statuses {statuses}")
        rec = self.conn.worker.pop_transfer(request_id)
        return {"statuses": statuses, "computed": computed, "digest_at_load": self.recv_digests.get(request_id),
                "load_errors": self.load_errors, "transfer": None if rec is None else rec.__dict__,
                "load_s": (self.loaded_at[request_id] - t0) if request_id in self.loaded_at else None,
                "free_blocks": self._free_blocks()}

    def expected_digest(self, request_id: str, prompt_len: int, writer: int) -> str:
        """The digest the prompt's blocks would have if `writer` had computed every prompt token
        (the other slots zero): a prefill's blocks, to compare with what a decode received."""
        import torch
        h = hashlib.sha256()
        nblocks = -(-prompt_len // BLOCK_SIZE)
        for li, name in enumerate(self.kv):
            for kv in (0, 1):
                for b in range(nblocks):
                    t = torch.zeros(BLOCK_SIZE, self.kv[name].shape[-2], HEAD)
                    for off in range(BLOCK_SIZE):
                        pos = b * BLOCK_SIZE + off
                        if pos < prompt_len:
                            t[off] = pattern(writer, _seed(request_id), li, kv, pos)
                    h.update(t.numpy().tobytes())
        return h.hexdigest()

    def run_steps(self, until_freed: List[str], deadline_s: float = 30.0) -> Dict[str, Any]:
        end = time.monotonic() + deadline_s
        t0 = time.time()
        while time.monotonic() < end and not set(until_freed) <= set(self.freed):
            self.step()
            time.sleep(0.01)
        return {"freed": self.freed, "free_blocks": self._free_blocks(), "elapsed_s": time.time() - t0,
                "expired": sorted(self.conn.worker.expired)}


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(obj: Dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    side = Side()
    emit({"event": "ready", "ok": True, "pid": os.getpid()})
    ops = {"init": side.init, "prefill": side.prefill, "decode": side.decode, "step": side.run_steps,
           "expected_digest": side.expected_digest,
           "link_transports": side.link_transports}
    fd, buf = sys.stdin.fileno(), b""
    while True:
        # Between requests the engine keeps stepping while it holds requests (vLLM's engine core
        # does so while finished requests wait for their blocks to be freed).
        if not select.select([fd], [], [], 0.01)[0]:
            if side.sched is not None and side.sched.has_requests():
                side.step()
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            os._exit(0)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            req = json.loads(line)
            op, rid = req.pop("op"), req.pop("id")
            req.pop("thread", None)
            try:
                emit({"id": rid, "ok": True, "result": ops[op](**req)})
            except Exception as exc:  # noqa: BLE001 - every failure is an answer
                emit({"id": rid, "ok": False, "error": {"type": type(exc).__name__, "message": str(exc),
                                                         "traceback": traceback.format_exc()}})


if __name__ == "__main__":
    main()
