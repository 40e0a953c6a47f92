# SPDX-License-Identifier: Apache-2.0
"""Typed metadata of the connector (the shape of vLLM's v1 KV connector, ``nixl/metadata.py``).

- ``KVCacheLayout``: what a peer's blocks must look like to be read as ours.
- ``compute_compatibility_hash(layout)``: a hash of exactly the factors that decide that.
- ``AgentMetadata`` + ``HandshakePayload``: what a prefill publishes out of band; a decode
  checks version and hash *before* decoding the rest (two-phase decode), so a mismatch is a
  clear ``LLMException(LLM_LINK_FAILED)`` naming both sides, never a decoder crash.
- ``RemoteMeta`` (carried in kv_transfer_params from the prefill to the decode),
  ``ReqMeta``/``SendLease``/``ConnectorMetadata`` (scheduler -> worker, once per step).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Set

__all__ = ["CONNECTOR_VERSION", "ReqId", "KVCacheLayout", "compute_compatibility_hash", "AgentMetadata",
           "HandshakePayload", "encode_handshake", "decode_handshake", "RemoteMeta", "ReqMeta",
           "SendLease", "PushMeta", "LandingRecord", "ConnectorMetadata"]

# Connector wire version. Bump it when a field of AgentMetadata/HandshakePayload/RemoteMeta (as
# carried in kv_transfer_params) is added, removed or changes meaning, or when the tensor order
# of the blocks cache changes. Changelog:
#   1: first version: layout (layers, K/V per layer in order K0,V0,K1,V1,..., kv heads, head
#      dim, block size, dtype), agent (cluster id, host, port, model id, blocks).
#   2: agent carries the engine id; kv_transfer_params carry the engine id, the consumed-notice
#      ticket id, the expiry (wall clock) and the prefill's handshake payload.
#   3: push mode: kv_transfer_params carry ``kv_mode`` and ``transfer_id``; the decode's landing
#      record (``LandingRecord``) names its blocks and layout hash to the prefill.
CONNECTOR_VERSION = 3

ReqId = str


@dataclass(frozen=True)
class KVCacheLayout:
    """One blocks cache holding ``num_layers * tensors_per_layer`` tensors of shape
    ``[num_blocks, block_size, num_kv_heads, head_dim]``, ordered K0, V0, K1, V1, ..."""
    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    dtype: str                       # a DataType name, e.g. "DT_FLOAT", "DT_BF16"
    tensors_per_layer: int = 2
    tensor_order: str = "layer_major_k_then_v"

    @property
    def num_tensors(self) -> int:
        return self.num_layers * self.tensors_per_layer

    def tensor_shape(self, num_blocks: int) -> List[int]:
        return [num_blocks, self.block_size, self.num_kv_heads, self.head_dim]

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)


def compute_compatibility_hash(layout: KVCacheLayout, version: int = CONNECTOR_VERSION) -> str:
    """sha256 (hex) of the factors that decide whether a peer's blocks can be read as ours:
    connector version, layer count, tensors per layer and their order, KV heads, head dim,
    block size, dtype.

    Left out on purpose: the number of blocks (each side sizes its own pool), memory
    placement and transport (llm_datadist picks the transport per link), addresses and cluster
    ids (addressing, not layout), and the model weights (serving one model on both sides is a
    deployment precondition; put a model id in ``AgentMetadata.model_name`` to check it too)."""
    factors = {"version": int(version), "num_layers": layout.num_layers,
               "tensors_per_layer": layout.tensors_per_layer, "tensor_order": layout.tensor_order,
               "num_kv_heads": layout.num_kv_heads, "head_dim": layout.head_dim,
               "block_size": layout.block_size, "dtype": layout.dtype}
    return hashlib.sha256(json.dumps(factors, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class AgentMetadata:
    """What a decode needs to link to a prefill and read its blocks."""
    cluster_id: int
    host: str
    port: int
    model_id: int
    num_blocks: int
    layout: KVCacheLayout
    model_name: str = ""
    engine_id: str = ""

    @staticmethod
    def from_dict(d: Dict[str, Any]) -> "AgentMetadata":
        d = dict(d)
        d["layout"] = KVCacheLayout(**d["layout"])
        return AgentMetadata(**d)


@dataclass(frozen=True)
class HandshakePayload:
    """Out-of-band P->D message: version and hash readable without decoding ``agent_metadata``."""
    version: int
    compatibility_hash: str
    agent_metadata: str              # JSON of AgentMetadata, decoded only after the checks

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def encode_handshake(agent: AgentMetadata) -> HandshakePayload:
    return HandshakePayload(CONNECTOR_VERSION, compute_compatibility_hash(agent.layout),
                            json.dumps(asdict(agent), sort_keys=True))


def decode_handshake(payload: Any, expected_hash: str, expected_model_name: Optional[str] = None) -> AgentMetadata:
    """Phase 1: version and compatibility hash; phase 2: decode. Raises
    LLMException(LLM_LINK_FAILED) on any mismatch, naming both values."""
    from ..status import LLMException, LLMStatusCode

    def refuse(msg: str, **ctx: Any) -> LLMException:
        return LLMException(msg, status_code=LLMStatusCode.LLM_LINK_FAILED,
                            context={"operation": "connector_handshake", "action": "fix_call",
                                     "recoverable": False, **ctx})

    if isinstance(payload, HandshakePayload):
        payload = payload.to_dict()
    if not isinstance(payload, dict):
        raise refuse(f"handshake payload must be a dict, got {type(payload).__name__}")
    version = payload.get("version")
    if version != CONNECTOR_VERSION:
        raise refuse(f"connector version mismatch: peer speaks {version!r}, we speak {CONNECTOR_VERSION}",
                     peer_version=version, local_version=CONNECTOR_VERSION)
    got = payload.get("compatibility_hash")
    if got != expected_hash:
        raise refuse(f"KV cache layout mismatch: peer compatibility hash {str(got)[:16]}..., ours "
                     f"{expected_hash[:16]}... (layers, K/V order, kv heads, head dim, block size or dtype differ)",
                     peer_hash=got, local_hash=expected_hash)
    try:
        agent = AgentMetadata.from_dict(json.loads(payload["agent_metadata"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise refuse(f"handshake payload of version {version} could not be decoded: {exc}") from exc
    if expected_model_name is not None and agent.model_name != expected_model_name:
        raise refuse(f"model mismatch: peer serves {agent.model_name!r}, we serve {expected_model_name!r}")
    return agent


@dataclass(frozen=True)
class RemoteMeta:
    """Where a request's KV lives on the prefill, and how to tell the prefill it was read
    (carried in kv_transfer_params; ``handshake`` lets a decode link to a prefill it has not
    seen, after the same checks as ``decode_handshake``)."""
    cluster_id: int
    host: str
    port: int
    block_ids: List[int]
    model_id: int = 0
    engine_id: str = ""
    ticket_id: Optional[int] = None
    expires_at: Optional[float] = None          # time.time() after which the prefill frees anyway
    handshake: Optional[Dict[str, Any]] = None

    def with_blocks(self, block_ids: List[int]) -> "RemoteMeta":
        return RemoteMeta(self.cluster_id, self.host, self.port, list(block_ids), self.model_id, self.engine_id,
                          self.ticket_id, self.expires_at, self.handshake)

    def to_params(self) -> Dict[str, Any]:
        return {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": self.engine_id,
                "remote_cluster_id": self.cluster_id, "remote_host": self.host, "remote_port": self.port,
                "remote_block_ids": list(self.block_ids), "remote_model_id": self.model_id,
                "remote_ticket_id": self.ticket_id, "remote_blocks_expiry_time": self.expires_at,
                "remote_handshake": self.handshake}

    @staticmethod
    def from_params(p: Dict[str, Any]) -> "RemoteMeta":
        ticket, expiry = p.get("remote_ticket_id"), p.get("remote_blocks_expiry_time")
        return RemoteMeta(int(p["remote_cluster_id"]), str(p["remote_host"]), int(p["remote_port"]),
                          [int(b) for b in p["remote_block_ids"]], int(p.get("remote_model_id", 0)),
                          str(p.get("remote_engine_id", "")), None if ticket is None else int(ticket),
                          None if expiry is None else float(expiry), p.get("remote_handshake"))


@dataclass
class ReqMeta:
    request_id: ReqId
    local_block_ids: List[int]
    remote: RemoteMeta
    num_tokens: int
    push: bool = False               # the prefill pushes into local_block_ids; nothing is pulled
    prompt_tokens: int = 0           # push: sizes the landing record (both sides compute it)


@dataclass(frozen=True)
class SendLease:
    """A prefill's hold on a finished request's blocks: the ticket the decode pulls when it has
    them, and the wall-clock time after which they are freed anyway."""
    ticket_id: int
    expires_at: float


@dataclass(frozen=True)
class PushMeta:
    """Push mode, prefill side: a request whose prompt is computed in this step, to be pushed
    layer by layer into the decode's blocks (which the decode's landing record names)."""
    request_id: ReqId
    block_ids: List[int]             # the prefill's blocks of the request, in token order
    prompt_tokens: int
    decode_cluster_id: int
    ticket_id: int                   # landing record on the decode, done ticket here (both keys)
    expires_at: float                # the prefill frees the blocks by then, pushed or not


class LandingRecord:
    """Push mode: what a decode publishes under ``CacheKey(decode cluster, ticket_id)`` for its
    prefill to read: the layout hash (checked before any byte is pushed) and the decode's
    blocks for the request's prompt, as one slot of ``size_for(max_blocks)`` bytes.

    Format (little endian): magic ``b"LLMDDPSH"``, u32 connector version, u32 block count,
    32 bytes of the compatibility hash, then u64 block ids."""
    MAGIC = b"LLMDDPSH"
    HEADER = 8 + 4 + 4 + 32

    @staticmethod
    def size_for(max_blocks: int) -> int:
        return LandingRecord.HEADER + 8 * max(1, max_blocks)

    @staticmethod
    def encode(compatibility_hash: str, block_ids: List[int], max_blocks: int) -> bytes:
        import struct
        if len(block_ids) > max_blocks:
            raise ValueError(f"{len(block_ids)} blocks do not fit a record of {max_blocks}")
        body = struct.pack(f"<8sII32s{len(block_ids)}Q", LandingRecord.MAGIC, CONNECTOR_VERSION, len(block_ids),
                           bytes.fromhex(compatibility_hash), *block_ids)
        return body.ljust(LandingRecord.size_for(max_blocks), b"\0")

    @staticmethod
    def decode(data: bytes, expected_hash: str) -> List[int]:
        """The decode's block ids; LLMException(LLM_LINK_FAILED) naming both values when the
        record is not one, is of another version, or describes another layout."""
        import struct
        from ..status import LLMException, LLMStatusCode

        def refuse(msg: str) -> LLMException:
            return LLMException(msg, status_code=LLMStatusCode.LLM_LINK_FAILED,
                                context={"operation": "connector_push", "action": "fix_call", "recoverable": False})

        if len(data) < LandingRecord.HEADER:
            raise refuse(f"landing record of {len(data)} bytes is shorter than its {LandingRecord.HEADER}-byte header")
        magic, version, count, digest = struct.unpack_from("<8sII32s", data)
        if magic != LandingRecord.MAGIC or version != CONNECTOR_VERSION:
            raise refuse(f"landing record magic {magic!r} version {version}: expected {LandingRecord.MAGIC!r} "
                         f"version {CONNECTOR_VERSION}")
        if digest.hex() != expected_hash:
            raise refuse(f"KV cache layout mismatch: decode compatibility hash {digest.hex()[:16]}..., ours "
                         f"{expected_hash[:16]}...")
        if LandingRecord.HEADER + 8 * count > len(data):
            raise refuse(f"landing record names {count} blocks but holds {len(data)} bytes")
        return list(struct.unpack_from(f"<{count}Q", data, LandingRecord.HEADER))


@dataclass
class ConnectorMetadata:
    """Scheduler -> worker, once per engine step."""
    reqs_to_recv: Dict[ReqId, ReqMeta] = field(default_factory=dict)
    reqs_to_send: Dict[ReqId, SendLease] = field(default_factory=dict)
    reqs_to_push: Dict[ReqId, PushMeta] = field(default_factory=dict)
