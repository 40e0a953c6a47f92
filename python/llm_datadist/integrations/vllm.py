# SPDX-License-Identifier: Apache-2.0
"""vLLM's KV connector over llm_datadist: ``LLMDataDistConnector(KVConnectorBase_V1)``.

    --kv-transfer-config '{"kv_connector": "LLMDataDistConnector",
                           "kv_connector_module_path": "llm_datadist.integrations.vllm",
                           "kv_role": "kv_producer", "engine_id": "prefill-0",
                           "kv_port": 26000,
                           "kv_connector_extra_config": {"host": "10.0.0.5"}}'

Pull mode, like vLLM's NixlConnector: the prefill finishes a request, keeps its blocks and hands
the decode (through the request's ``kv_transfer_params``) where they are; the decode's scheduler
parks the request while its worker pulls the blocks in the background; the decode then tells
the prefill over our link that it has them (``connector.py`` explains the ticket), and the
prefill frees them, or frees them at the expiry when no notice comes. A failed load comes back
as block ids from ``get_block_ids_with_load_errors`` and vLLM recomputes them.

Push mode (``"mode": "push"`` in ``kv_connector_extra_config`` on both sides): the proxy sends
the request to both at once, each with ``kv_transfer_params`` carrying ``"kv_mode": "push"`` and
one ``"transfer_id"``; the decode's also name the prefill (``remote_engine_id``,
``remote_host``, ``remote_port``), the prefill's the decode (``remote_engine_id``). The
prefill's workers push each layer into the decode's blocks as ``save_kv_layer`` reports it
written (``connector.py``, "Push mode").

The engine-neutral logic lives in ``connector.py`` (the serve demo drives it directly); this
module maps vLLM's types onto it: ``KVTransferConfig`` -> settings, ``KVCacheBlocks`` -> block
ids, the attention backends' KV tensors -> one registered blocks cache, vLLM's metadata
classes. Needs vLLM (pinned 0.34.0); importing ``llm_datadist`` alone never imports vLLM.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

VLLM_VERSION = "0.34.0"

try:
    import torch
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (KVConnectorBase_V1, KVConnectorHandshakeMetadata,
                                                                   KVConnectorMetadata, KVConnectorRole)
except ImportError as _exc:  # pragma: no cover - exercised by the no-vLLM test in a clean venv
    raise ImportError(
        f"llm_datadist.integrations.vllm needs vLLM {VLLM_VERSION} ({_exc.name or 'vllm'} is missing): "
        f"pip install --no-deps vllm=={VLLM_VERSION} plus its pure-Python imports "
        f"(requirements/vllm-test.txt lists them); see the README, 'vLLM'") from _exc

from ..status import LLMException, LLMStatusCode
from .connector import ConnectorConfig, ConnectorScheduler, ConnectorWorker
from .metadata import ConnectorMetadata, KVCacheLayout

__all__ = ["VLLM_VERSION", "LLMDataDistConnector", "LLMDataDistConnectorMetadata", "LLMDataDistHandshakeMetadata",
           "EXTRA_CONFIG_DEFAULTS", "kv_layout_of"]

# kv_connector_extra_config keys (README, "vLLM"); anything else is refused by name.
EXTRA_CONFIG_DEFAULTS: Dict[str, Any] = {
    "host": "127.0.0.1",         # the address a prefill listens on (kv_port) and decodes link to
    "cluster_id": None,          # int; default: derived from engine_id
    "transport": "auto",         # "auto" (shm / cuda_ipc on one host; ucx with RDMA, else tcp), "tcp", "ucx"
    "secret": None,              # hex link secret (llmdd.LinkSecret), the same on both sides
    "free_timeout_s": 30.0,      # prefill: free a request's blocks after this without a notice
    "link_timeout_ms": 3000,
    "sync_kv_timeout_ms": 10000,
    "retry_attempts": 4,
    "retry_deadline_s": 10.0,
    "notice_deadline_s": 5.0,
    "host_pool_bytes": 1 << 20,  # host pool for the consumed-notice tickets
    "model_name": "",            # when set on both sides, checked at the handshake
    "mode": "pull",              # or "push": the prefill writes each layer into the decode's blocks
    "push_wait_s": 30.0,         # push: how long a side waits for the other (record, layers, ticket)
}

_DTYPES = {torch.float32: "DT_FLOAT", torch.float16: "DT_FLOAT16", torch.bfloat16: "DT_BF16",
           torch.int8: "DT_INT8", torch.uint8: "DT_UINT8"}
for _name in ("float8_e4m3fn", "float8_e5m2"):        # fp8 KV caches: moved as bytes, bit-exact
    if hasattr(torch, _name):
        _DTYPES[getattr(torch, _name)] = "DT_UINT8"


def _extra(kv_transfer_config: Any) -> Dict[str, Any]:
    given = dict(getattr(kv_transfer_config, "kv_connector_extra_config", None) or {})
    unknown = sorted(set(given) - set(EXTRA_CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"kv_connector_extra_config: unknown keys {unknown}; known: {sorted(EXTRA_CONFIG_DEFAULTS)}")
    out = dict(EXTRA_CONFIG_DEFAULTS)
    out.update(given)
    if out["mode"] not in ("pull", "push"):
        raise ValueError(f"kv_connector_extra_config mode={out['mode']!r}: must be 'pull' or 'push'")
    if out["transport"] not in ("auto", "tcp", "ucx"):
        raise ValueError(f"kv_connector_extra_config transport={out['transport']!r}: must be 'auto', 'tcp' or 'ucx'")
    return out


def _cluster_id(engine_id: str) -> int:
    return int.from_bytes(hashlib.sha256(engine_id.encode()).digest()[:8], "little") >> 1


def _dense_order(t: "torch.Tensor") -> Optional[List[int]]:
    """The dims of ``t`` from outermost to innermost in memory when ``t`` covers its memory
    densely (any dim order, no gaps, no overlap); None otherwise."""
    dims = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    expect = 1
    for d in reversed(dims):
        if t.shape[d] != 1 and t.stride(d) != expect:
            return None
        expect *= t.shape[d]
    return dims


def kv_layout_of(kv_caches: Dict[str, "torch.Tensor"], num_blocks: int, block_size: int, num_kv_heads: int,
                 head_size: int) -> Tuple[List["torch.Tensor"], KVCacheLayout]:
    """vLLM's per-layer KV tensors as they are -> the blocks-major tensors to register in place
    (their memory, not copies) and the layout both sides must share:

    - FlashAttention ``[2, num_blocks, ...]``: two tensors per layer (K, V);
    - FlashInfer ``[num_blocks, 2, ...]`` and MLA ``[num_blocks, block_size, dim]``: one per layer.

    A tensor whose dims were permuted in memory (e.g. an HND cache) is registered in its
    memory order; the order goes into the layout, so peers must match it."""
    if not kv_caches:
        raise ValueError("register_kv_caches got no KV cache tensors")
    pieces: List[torch.Tensor] = []
    kinds = set()
    for name, t in kv_caches.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"kv cache of layer {name!r} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() >= 2 and t.shape[0] == 2 and t.shape[1] == num_blocks and t.shape[0] != num_blocks:
            kind, parts = "kv_first", [t[0], t[1]]
        elif t.shape[0] == num_blocks:
            kind, parts = "blocks_first", [t]
        else:
            raise ValueError(f"kv cache of layer {name!r} has shape {list(t.shape)}: neither [2, {num_blocks}, ...] "
                             f"nor [{num_blocks}, ...] ({num_blocks} blocks)")
        for p in parts:
            order = _dense_order(p)
            if order is None or order[0] != 0:
                raise ValueError(f"kv cache of layer {name!r} ({list(t.shape)}, strides {list(t.stride())}): its "
                                 f"blocks are not contiguous in memory, so they cannot be moved as whole blocks")
            pieces.append(p.permute(order))          # a contiguous view of the same memory
            kinds.add((kind, tuple(order), tuple(p.permute(order).shape[1:])))
        if t.dtype not in _DTYPES:
            raise ValueError(f"kv cache of layer {name!r} has dtype {t.dtype}; supported: "
                             f"{sorted(str(d) for d in _DTYPES)}")
    if len(kinds) != 1 or len({(p.dtype, p.device) for p in pieces}) != 1:
        raise ValueError(f"the layers' KV tensors differ in layout, dtype or device ({sorted(kinds)}); one "
                         f"blocks cache needs them equal")
    (kind, order, per_block), = kinds
    layout = KVCacheLayout(num_layers=len(kv_caches), num_kv_heads=num_kv_heads, head_dim=head_size,
                           block_size=block_size, dtype=_DTYPES[pieces[0].dtype],
                           tensors_per_layer=2 if kind == "kv_first" else 1,
                           tensor_order=f"vllm:{kind}:dims{list(order)}:block{list(per_block)}")
    return pieces, layout


@dataclass
class LLMDataDistConnectorMetadata(KVConnectorMetadata):
    """Scheduler -> worker, once per step (vLLM's carrier of our ConnectorMetadata)."""
    core: ConnectorMetadata = field(default_factory=ConnectorMetadata)


@dataclass
class LLMDataDistHandshakeMetadata(KVConnectorHandshakeMetadata):
    """A worker's versioned handshake payload (``HandshakePayload.to_dict()``), JSON-safe."""
    payload: Dict[str, Any] = field(default_factory=dict)


class LLMDataDistConnector(KVConnectorBase_V1):
    """vLLM's KV connector over llm_datadist (pull mode); see the module docstring."""

    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        ktc = self._kv_transfer_config
        extra = _extra(ktc)
        self.extra = extra
        parallel = getattr(vllm_config, "parallel_config", None)
        if parallel is not None and (getattr(parallel, "tensor_parallel_size", 1) != 1
                                     or getattr(parallel, "pipeline_parallel_size", 1) != 1):
            raise LLMException(f"LLMDataDistConnector supports tensor and pipeline parallel size 1 only yet, got "
                               f"tp={parallel.tensor_parallel_size} pp={parallel.pipeline_parallel_size}",
                               status_code=LLMStatusCode.LLM_FEATURE_NOT_ENABLED,
                               context={"operation": "connector_init"})
        self.engine_id = str(ktc.engine_id)
        self.is_producer = bool(ktc.is_kv_producer)
        cluster_id = extra["cluster_id"] if extra["cluster_id"] is not None else _cluster_id(self.engine_id)
        host = str(extra["host"])
        self.config = ConnectorConfig(
            layout=None, cluster_id=int(cluster_id), host=host, port=int(ktc.kv_port) if self.is_producer else 0,
            engine_id=self.engine_id, model_name=str(extra["model_name"]), free_timeout_s=float(extra["free_timeout_s"]),
            link_timeout_ms=int(extra["link_timeout_ms"]), retry_attempts=int(extra["retry_attempts"]),
            retry_deadline_s=float(extra["retry_deadline_s"]), notice_deadline_s=float(extra["notice_deadline_s"]),
            mode=str(extra["mode"]), push_wait_s=float(extra["push_wait_s"]))
        self._layer_index: Dict[str, int] = {}
        # push mode, scheduler side: a prefill's push requests and their blocks until their prompt is computed
        self._push_watch: Dict[str, Tuple[Any, List[int]]] = {}
        # push mode, scheduler side: requests whose push the workers were told to run; their blocks
        # are read by the push until the workers report it ended (done_sending), even if aborted
        self._pushing: Set[str] = set()
        self.scheduler: Optional[ConnectorScheduler] = None
        self.worker: Optional[ConnectorWorker] = None
        self.datadist: Any = None
        if role == KVConnectorRole.SCHEDULER:
            self.scheduler = ConnectorScheduler(self.config)
        else:
            self.datadist = self._init_datadist()
            self.worker = ConnectorWorker(self.config, self.datadist)

    def _init_datadist(self) -> Any:
        import llm_datadist as ld
        e, c = self.extra, self.config
        cfg = ld.LLMConfig()
        cfg.device_id = 0
        cfg.enable_cache_manager = True
        cfg.sync_kv_timeout = int(e["sync_kv_timeout_ms"])
        cfg.host_mem_pool_cfg = json.dumps({"memory_size": int(e["host_pool_bytes"])})
        if self.is_producer:
            cfg.listen_ip_info = f"{c.host}:{c.port}"
        options = cfg.generate_options()
        if e["transport"] != "auto":
            options["llmdd.Transport"] = str(e["transport"])
        if e["secret"]:
            options["llmdd.LinkSecret"] = str(e["secret"])
        role = ld.LLMRole.PROMPT if self.is_producer else ld.LLMRole.DECODER
        dd = ld.LLMDataDist(role, c.cluster_id)
        dd.init(options)
        return dd

    # -- the half that exists ----------------------------------------------------------------
    def _s(self, method: str) -> ConnectorScheduler:
        if self.scheduler is None:
            raise LLMException(f"{method} is a scheduler-side method; this connector has role {self.role.name}",
                               status_code=LLMStatusCode.LLM_PARAM_INVALID, context={"operation": method})
        return self.scheduler

    def _w(self, method: str) -> ConnectorWorker:
        if self.worker is None:
            raise LLMException(f"{method} is a worker-side method; this connector has role {self.role.name}",
                               status_code=LLMStatusCode.LLM_PARAM_INVALID, context={"operation": method})
        return self.worker

    # ==== worker side ==========================================================================
    def register_kv_caches(self, kv_caches: Dict[str, "torch.Tensor"]) -> None:
        w = self._w("register_kv_caches")
        if len(self._kv_cache_config.kv_cache_groups) != 1:
            raise LLMException(f"{len(self._kv_cache_config.kv_cache_groups)} KV cache groups: one is supported yet",
                               status_code=LLMStatusCode.LLM_FEATURE_NOT_ENABLED,
                               context={"operation": "register_kv_caches"})
        spec = self._kv_cache_config.kv_cache_groups[0].kv_cache_spec
        names = [n for n in self._kv_cache_config.kv_cache_groups[0].layer_names if n in kv_caches]
        ordered = {n: kv_caches[n] for n in names} if len(names) == len(kv_caches) else dict(kv_caches)
        heads = getattr(spec, "num_kv_heads", 1)
        pieces, layout = kv_layout_of(ordered, self._kv_cache_config.num_blocks, spec.block_size, heads,
                                      spec.head_size)
        self._layer_index = {name: i for i, name in enumerate(ordered)}
        w.register_kv_caches(pieces, layout)

    def get_handshake_metadata(self) -> LLMDataDistHandshakeMetadata:
        return LLMDataDistHandshakeMetadata(self._w("get_handshake_metadata").get_handshake_metadata().to_dict())

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        self._w("start_load_kv").start_load_kv()     # the metadata bound in bind_connector_metadata

    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        super().bind_connector_metadata(connector_metadata)
        if isinstance(connector_metadata, LLMDataDistConnectorMetadata):
            self._w("bind_connector_metadata").bind_connector_metadata(connector_metadata.core)

    def clear_connector_metadata(self) -> None:
        super().clear_connector_metadata()
        if self.worker is not None:
            self.worker.clear_connector_metadata()

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None        # whole-request loads; vLLM waits for them through get_finished

    def save_kv_layer(self, layer_name: str, kv_layer: "torch.Tensor", attn_metadata: Any, **kwargs: Any) -> None:
        if self.config.mode != "push":
            return None    # pull mode: the decode reads the blocks; nothing to push
        wait = None
        if isinstance(kv_layer, torch.Tensor) and kv_layer.is_cuda:
            # the layer's kernels are queued, not done: the push waits on this event, not the GPU
            event = torch.cuda.Event()
            event.record()
            wait = event.synchronize
        self._w("save_kv_layer").save_kv_layer(self._layer_index.get(layer_name, -1), wait)

    def wait_for_save(self) -> None:
        if self.config.mode == "push":
            self._w("wait_for_save").wait_for_save()

    def get_finished(self, finished_req_ids: Set[str]) -> Tuple[Optional[Set[str]], Optional[Set[str]]]:
        sending, recving = self._w("get_finished").get_finished(set(finished_req_ids))
        return (sending or None), (recving or None)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        return self._w("get_block_ids_with_load_errors").get_block_ids_with_load_errors()

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.shutdown()
            self.worker = None
        if self.datadist is not None:
            self.datadist.finalize()
            self.datadist = None

    # ==== scheduler side =======================================================================
    def set_xfer_handshake_metadata(self, metadata: Dict[int, KVConnectorHandshakeMetadata]) -> None:
        """The engine hands the scheduler its workers' handshakes (by tp rank); a prefill sends
        rank 0's with every request's kv_transfer_params, so a decode needs no side channel."""
        meta = metadata.get(0)
        if isinstance(meta, LLMDataDistHandshakeMetadata):
            self._s("set_xfer_handshake_metadata").set_handshake(meta.payload)

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[Optional[int], bool]:
        return self._s("get_num_new_matched_tokens").get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        s = self._s("update_state_after_alloc")
        params = getattr(request, "kv_transfer_params", None) or {}
        if params.get("kv_mode") == "push" and "remote_cluster_id" not in params and "remote_engine_id" in params:
            params["remote_cluster_id"] = _cluster_id(str(params["remote_engine_id"]))
        if s.is_push_prefill(request):
            self._push_watch[request.request_id] = (request, list(blocks.get_block_ids()[0]))
        local = blocks.get_unhashed_block_ids() if num_external_tokens > 0 else []
        s.update_state_after_alloc(request, local, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> LLMDataDistConnectorMetadata:
        s = self._s("build_connector_meta")
        if self._push_watch:
            self._queue_prefilled_pushes(s, scheduler_output)
        return LLMDataDistConnectorMetadata(s.build_connector_meta())

    def _queue_prefilled_pushes(self, s: ConnectorScheduler, out: Any) -> None:
        """Push mode: a watched request whose prompt this step completes is pushed in this step
        (vLLM builds the metadata before it counts the step's tokens as computed)."""
        cached = out.scheduled_cached_reqs
        for i, rid in enumerate(cached.req_ids):
            if rid in self._push_watch and cached.new_block_ids[i] is not None:
                self._push_watch[rid][1].extend(cached.new_block_ids[i][0])
        for rid, (request, block_ids) in list(self._push_watch.items()):
            n = out.num_scheduled_tokens.get(rid, 0)
            if n and request.num_computed_tokens + n >= len(request.prompt_token_ids):
                s.queue_push(request, block_ids)
                self._pushing.add(rid)
                del self._push_watch[rid]

    def request_finished(self, request: Any, block_ids: Sequence[int]) -> Tuple[bool, Optional[Dict[str, Any]]]:
        from vllm.v1.request import RequestStatus
        s = self._s("request_finished")
        self._push_watch.pop(request.request_id, None)
        pushing = request.request_id in self._pushing
        self._pushing.discard(request.request_id)
        if request.status not in (RequestStatus.FINISHED_LENGTH_CAPPED, RequestStatus.FINISHED_STOPPED):
            # Aborted: nothing for a decode to pull. But a push already under way reads these
            # blocks: vLLM must not hand them to another request until the workers report the
            # push ended (done_sending, at the latest push_wait_s / free_timeout_s later).
            return pushing, None
        return s.request_finished(request, list(block_ids))


if "LLMDataDistConnector" not in getattr(KVConnectorFactory, "_registry", {}):
    KVConnectorFactory.register_connector("LLMDataDistConnector", __name__, "LLMDataDistConnector")
