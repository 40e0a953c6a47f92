# SPDX-License-Identifier: Apache-2.0
"""A KV connector over llm_datadist in the shape of vLLM's v1 KV connector (pull mode: the
decode reads the prefill's blocks; the prefill keeps them until the decode confirms or a
timeout passes).

Scheduler side (``role=KVConnectorRole.SCHEDULER``):
- ``get_num_new_matched_tokens(request, num_computed_tokens)`` -> (tokens to load from a
  remote prefill, load_async=False)
- ``update_state_after_alloc(request, block_ids, num_external_tokens)``: remember where the
  loaded blocks go
- ``build_connector_meta(scheduler_output=None)`` -> ConnectorMetadata for the worker (step)
- ``request_finished(request, block_ids)`` -> (delay_free, kv_transfer_params): on a prefill,
  keep the blocks and hand the decode what it needs to pull them
- ``notify_consumed(request_ids)``: the decode confirmed; free at the next step

Worker side (``role=KVConnectorRole.WORKER``):
- ``register_kv_caches(cache_or_tensors)``: a llm_datadist blocks cache, or {layer: (K, V)}
  torch tensors registered with ``register_blocks_cache`` (order K0, V0, K1, V1, ...)
- ``get_handshake_metadata()`` (prefill) / ``add_remote_agent(payload)`` (decode): versioned
  handshake, compatibility hash checked before decoding, then ``link_clusters``
- ``bind_connector_metadata`` / ``clear_connector_metadata``
- ``start_load_kv()``: pull every request's blocks (``pull_blocks``; the retry helper on
  retryable codes only); a failed load is logged as a JSON line with the request id and
  reported as block ids, never raised
- ``wait_for_layer_load(layer)``, ``save_kv_layer(...)``, ``wait_for_save()``: no-ops (loads
  finish inside start_load_kv; in pull mode the prefill saves nothing)
- ``get_finished(finished_req_ids)`` -> (done_sending, done_recving)
- ``get_block_ids_with_load_errors()`` -> set of local block ids whose load failed since the
  last call: the engine recomputes them. They are reported in the same step as the request
  appears in done_recving.
- ``relink(cluster_id)``, ``shutdown()``

vLLM is not imported here; the method names and return shapes follow ``KVConnectorBase_V1``.
"""
from __future__ import annotations

import enum
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .health import HealthRegistry
from .metadata import (AgentMetadata, ConnectorMetadata, HandshakePayload, KVCacheLayout, RemoteMeta, ReqId,
                       ReqMeta, WorkerMetadata, compute_compatibility_hash, decode_handshake, encode_handshake)

__all__ = ["KVConnectorRole", "ConnectorConfig", "Request", "TransferRecord", "LLMDataDistConnector",
           "LLMDataDistConnectorScheduler", "LLMDataDistConnectorWorker"]

_log = logging.getLogger("llm_datadist.integrations")


class KVConnectorRole(enum.Enum):
    SCHEDULER = 0
    WORKER = 1


@dataclass
class ConnectorConfig:
    layout: KVCacheLayout
    cluster_id: int
    host: str = "127.0.0.1"
    port: int = 0                    # the prefill's listen port (0: this side does not listen)
    model_id: int = 0
    model_name: str = ""
    free_timeout_s: float = 30.0     # a prefill frees unconfirmed blocks after this
    link_timeout_ms: int = 3000
    retry_attempts: int = 4
    retry_deadline_s: float = 10.0
    retry_base_delay_s: float = 0.02


@dataclass
class Request:
    """The fields of an engine request the connector reads (vLLM's Request has them too)."""
    request_id: ReqId
    prompt_token_ids: List[int]
    kv_transfer_params: Optional[Dict[str, Any]] = None


@dataclass
class TransferRecord:
    request_id: ReqId
    peer: int
    ok: bool
    elapsed_s: float
    attempts: int
    blocks: int
    error: Optional[Dict[str, Any]] = None


def _role_error(method: str, role: KVConnectorRole) -> Exception:
    from ..status import LLMException, LLMStatusCode
    return LLMException(f"{method} is a {'worker' if role is KVConnectorRole.SCHEDULER else 'scheduler'}-side "
                        f"method; this connector was built with role={role.name}",
                        status_code=LLMStatusCode.LLM_PARAM_INVALID, context={"operation": method})


# ---- scheduler side ------------------------------------------------------------------------------

class LLMDataDistConnectorScheduler:
    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._pending_recv: Dict[ReqId, ReqMeta] = {}
        self._pending_send: Dict[ReqId, float] = {}
        self._consumed: Set[ReqId] = set()

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[int, bool]:
        params = getattr(request, "kv_transfer_params", None) or {}
        if not params.get("do_remote_prefill"):
            return 0, False
        return max(0, len(request.prompt_token_ids) - num_computed_tokens), False

    def update_state_after_alloc(self, request: Any, block_ids: Sequence[int], num_external_tokens: int) -> None:
        params = getattr(request, "kv_transfer_params", None) or {}
        if num_external_tokens <= 0 or not params.get("do_remote_prefill"):
            return
        remote = RemoteMeta.from_params(params)
        n = self.config.layout.blocks_for(len(request.prompt_token_ids))
        if len(remote.block_ids) < n or len(block_ids) < n:
            from ..status import LLMException, LLMStatusCode
            raise LLMException(f"request {request.request_id}: {len(request.prompt_token_ids)} prompt tokens need "
                               f"{n} blocks; remote has {len(remote.block_ids)}, local {len(block_ids)}",
                               status_code=LLMStatusCode.LLM_PARAM_INVALID,
                               context={"operation": "update_state_after_alloc", "request_id": request.request_id})
        remote = RemoteMeta(remote.cluster_id, remote.host, remote.port, remote.block_ids[:n], remote.model_id)
        with self._lock:
            self._pending_recv[request.request_id] = ReqMeta(request.request_id, list(block_ids[:n]), remote,
                                                             len(request.prompt_token_ids))
        params["do_remote_prefill"] = False        # loaded once, as vLLM does

    def build_connector_meta(self, scheduler_output: Any = None) -> ConnectorMetadata:
        with self._lock:
            meta = ConnectorMetadata(self._pending_recv, self._pending_send, self._consumed)
            self._pending_recv, self._pending_send, self._consumed = {}, {}, set()
        return meta

    def request_finished(self, request: Any, block_ids: Sequence[int]) -> Tuple[bool, Optional[Dict[str, Any]]]:
        params = getattr(request, "kv_transfer_params", None) or {}
        if not params.get("do_remote_decode"):
            return False, None
        with self._lock:
            self._pending_send[request.request_id] = time.monotonic() + self.config.free_timeout_s
        c = self.config
        return True, RemoteMeta(c.cluster_id, c.host, c.port, list(block_ids), c.model_id).to_params()

    def notify_consumed(self, request_ids: Iterable[ReqId]) -> None:
        with self._lock:
            self._consumed.update(request_ids)


# ---- worker side ---------------------------------------------------------------------------------

class LLMDataDistConnectorWorker:
    def __init__(self, config: ConnectorConfig, datadist: Any, health: Optional[HealthRegistry] = None) -> None:
        self.config = config
        self.datadist = datadist
        self.health = health
        self.compatibility_hash = compute_compatibility_hash(config.layout)
        self.cache: Any = None
        self.staging: Any = None
        self.agents: Dict[int, AgentMetadata] = {}
        self.transfers: Dict[ReqId, TransferRecord] = {}
        self._meta: Optional[ConnectorMetadata] = None
        self._leases: Dict[ReqId, float] = {}
        self._done_sending: Set[ReqId] = set()
        self._done_recving: Set[ReqId] = set()
        self._load_errors: Set[int] = set()
        self.expired: Set[ReqId] = set()         # leases freed by the timeout, not by a confirmation
        self._registered: List[int] = []

    # -- caches -----------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: Any, staging: Any = None) -> Any:
        """A llm_datadist blocks cache (used as is), or {layer_name: (K, V)} torch tensors of
        shape [num_blocks, block_size, kv_heads, head_dim] registered as one blocks cache.
        ``staging``: an optional second blocks cache (e.g. device memory) that loads land in
        first and are then copied from (swap_blocks)."""
        import llm_datadist as ld
        if isinstance(kv_caches, dict):
            tensors = [t for kv in kv_caches.values() for t in kv]
            layout = self.config.layout
            if len(tensors) != layout.num_tensors:
                raise ValueError(f"{len(tensors)} tensors for a layout of {layout.num_tensors}")
            desc = ld.CacheDesc(layout.num_tensors, list(tensors[0].shape), getattr(ld.DataType, layout.dtype))
            key = ld.BlocksCacheKey(self.config.cluster_id, self.config.model_id) if self.config.port else None
            self.cache = self.datadist.cache_manager.register_blocks_cache(desc, [t.data_ptr() for t in tensors], key)
            self._registered.append(self.cache.cache_id)
        else:
            self.cache = kv_caches
        self.staging = staging
        return self.cache

    # -- handshake --------------------------------------------------------------------------
    def get_handshake_metadata(self) -> HandshakePayload:
        c = self.config
        num_blocks = self.cache.cache_desc.shape[0] if self.cache is not None else 0
        return encode_handshake(AgentMetadata(c.cluster_id, c.host, c.port, c.model_id, num_blocks, c.layout,
                                              c.model_name))

    def add_remote_agent(self, payload: Any) -> AgentMetadata:
        """Checks the peer's payload (version, hash, then decode) and links to it. Raises
        LLMException(LLM_LINK_FAILED) when incompatible or unreachable."""
        agent = decode_handshake(payload, self.compatibility_hash, self.config.model_name or None)
        self._link(agent)
        self.agents[agent.cluster_id] = agent
        return agent

    def relink(self, cluster_id: int) -> bool:
        """Drops the link to a known peer (force) and links again; True when linked."""
        agent = self.agents.get(cluster_id)
        if agent is None:
            return False
        import llm_datadist as ld
        try:
            self.datadist.unlink_clusters([self._cluster(agent)], timeout=self.config.link_timeout_ms, force=True)
        except ld.LLMException:
            pass
        try:
            self._link(agent)
            return True
        except ld.LLMException as exc:
            _log.warning("%s", json.dumps({"event": "relink_failed", "peer": cluster_id, "error": exc.to_dict()}),
                         extra={"remote_cluster_id": cluster_id, "operation": "relink", "error": exc.to_dict()})
            return False

    @staticmethod
    def _cluster(agent: AgentMetadata) -> Any:
        import llm_datadist as ld
        c = ld.LLMClusterInfo()
        c.remote_cluster_id = agent.cluster_id
        c.append_remote_ip_info(agent.host, agent.port)
        return c

    def _link(self, agent: AgentMetadata) -> None:
        import llm_datadist as ld
        ret, rets = self.datadist.link_clusters([self._cluster(agent)], timeout=self.config.link_timeout_ms)
        if rets[0] not in (ld.LLMStatusCode.LLM_SUCCESS, ld.LLMStatusCode.LLM_ALREADY_LINK):
            reasons = getattr(self.datadist, "last_link_errors", None)
            raise ld.LLMException(f"link to cluster {agent.cluster_id} at {agent.host}:{agent.port} failed: "
                                  f"{rets[0].name} {reasons or ''}".rstrip(), status_code=rets[0],
                                  context={"operation": "link_clusters", "remote_cluster_id": agent.cluster_id})

    # -- metadata ---------------------------------------------------------------------------
    def bind_connector_metadata(self, meta: ConnectorMetadata) -> None:
        self._meta = meta
        now = time.monotonic()
        for rid, deadline in meta.reqs_to_send.items():
            self._leases[rid] = deadline
        for rid in meta.reqs_consumed:
            if self._leases.pop(rid, None) is not None:
                self._done_sending.add(rid)
        self._expire(now)

    def clear_connector_metadata(self) -> None:
        self._meta = None

    def _expire(self, now: float) -> None:
        for rid, deadline in list(self._leases.items()):
            if now >= deadline:
                del self._leases[rid]
                self._done_sending.add(rid)
                self.expired.add(rid)

    def held_requests(self) -> List[ReqId]:
        return list(self._leases)

    # -- loads ------------------------------------------------------------------------------
    def start_load_kv(self, forward_context: Any = None, **kwargs: Any) -> None:
        if self._meta is None:
            return
        for req in self._meta.reqs_to_recv.values():
            self._load(req)

    def _pull(self, req: ReqMeta) -> None:
        import llm_datadist as ld
        cm = self.datadist.cache_manager
        key = ld.BlocksCacheKey(req.remote.cluster_id, req.remote.model_id)
        if self.staging is None:
            cm.pull_blocks(key, self.cache, req.remote.block_ids, req.local_block_ids)
        else:
            cm.pull_blocks(key, self.staging, req.remote.block_ids, req.local_block_ids)
            cm.swap_blocks(self.staging, self.cache, {b: b for b in req.local_block_ids})

    def _load(self, req: ReqMeta) -> None:
        from ..retry import retry
        from ..status import LLMException, LLMStatusCode
        c = self.config
        attempts = [1]

        def on_retry(n: int, exc: BaseException, delay: float) -> None:
            attempts[0] = n + 1
            _log.warning("%s", json.dumps({"event": "load_retry", "request_id": req.request_id, "attempt": n,
                                           "delay_s": round(delay, 4), "error": exc.to_dict()}),
                         extra={"request_id": req.request_id, "operation": "pull_blocks",
                                "remote_cluster_id": req.remote.cluster_id, "error": exc.to_dict()})

        t0 = time.perf_counter()
        try:
            retry(lambda: self._pull(req), attempts=c.retry_attempts, deadline=c.retry_deadline_s,
                  base_delay=c.retry_base_delay_s, on_retry=on_retry)
        except Exception as exc:  # noqa: BLE001 - a failed load is data (block ids), never raised
            if not isinstance(exc, LLMException):
                exc = LLMException(f"{type(exc).__name__}: {exc}", status_code=LLMStatusCode.LLM_FAILED,
                                   context={"operation": "pull_blocks"})
            err = exc.to_dict()
            err["request_id"] = req.request_id
            rec = TransferRecord(req.request_id, req.remote.cluster_id, False, time.perf_counter() - t0,
                                 attempts[0], len(req.local_block_ids), err)
            self._load_errors.update(req.local_block_ids)
            _log.error("%s", json.dumps({"event": "load_failed", "request_id": req.request_id,
                                         "peer": req.remote.cluster_id, "blocks": req.local_block_ids,
                                         "error": err}),
                       extra={"request_id": req.request_id, "operation": "pull_blocks",
                              "remote_cluster_id": req.remote.cluster_id, "error": err})
            if self.health is not None:
                self.health.peer(req.remote.cluster_id).record_failure(exc.status_code.name, exc.action, err)
        else:
            rec = TransferRecord(req.request_id, req.remote.cluster_id, True, time.perf_counter() - t0,
                                 attempts[0], len(req.local_block_ids))
            if self.health is not None:
                self.health.peer(req.remote.cluster_id).record_success()
        self.transfers[req.request_id] = rec
        self._done_recving.add(req.request_id)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any = None, **kwargs: Any) -> None:
        return None

    def wait_for_save(self) -> None:
        return None

    def get_finished(self, finished_req_ids: Set[ReqId]) -> Tuple[Optional[Set[ReqId]], Optional[Set[ReqId]]]:
        self._expire(time.monotonic())
        sending, recving = self._done_sending, self._done_recving
        self._done_sending, self._done_recving = set(), set()
        return (sending or None), (recving or None)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        bad, self._load_errors = self._load_errors, set()
        return bad

    def build_connector_worker_meta(self) -> WorkerMetadata:
        sending, recving = self.get_finished(set())
        return WorkerMetadata(sending or set(), recving or set(), self.get_block_ids_with_load_errors())

    def shutdown(self) -> None:
        for cache_id in self._registered:
            try:
                self.datadist.cache_manager.unregister_cache(cache_id)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self._registered.clear()


# ---- the facade ----------------------------------------------------------------------------------

class LLMDataDistConnector:
    """One class, two roles; each method forwards to the half that exists and raises
    LLMException(LLM_PARAM_INVALID) on the wrong role (no assert)."""

    def __init__(self, role: KVConnectorRole, config: ConnectorConfig, datadist: Any = None,
                 health: Optional[HealthRegistry] = None) -> None:
        if not isinstance(role, KVConnectorRole):
            raise TypeError(f"role must be a KVConnectorRole, got {role!r}")
        self.role = role
        self.config = config
        self.scheduler = LLMDataDistConnectorScheduler(config) if role is KVConnectorRole.SCHEDULER else None
        if role is KVConnectorRole.WORKER:
            if datadist is None:
                raise ValueError("the worker role needs an initialized LLMDataDist")
            self.worker: Optional[LLMDataDistConnectorWorker] = LLMDataDistConnectorWorker(config, datadist, health)
        else:
            self.worker = None

    def _s(self, method: str) -> LLMDataDistConnectorScheduler:
        if self.scheduler is None:
            raise _role_error(method, self.role)
        return self.scheduler

    def _w(self, method: str) -> LLMDataDistConnectorWorker:
        if self.worker is None:
            raise _role_error(method, self.role)
        return self.worker

    # Scheduler Side Methods
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[int, bool]:
        return self._s("get_num_new_matched_tokens").get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, block_ids: Sequence[int], num_external_tokens: int) -> None:
        self._s("update_state_after_alloc").update_state_after_alloc(request, block_ids, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any = None) -> ConnectorMetadata:
        return self._s("build_connector_meta").build_connector_meta(scheduler_output)

    def request_finished(self, request: Any, block_ids: Sequence[int]) -> Tuple[bool, Optional[Dict[str, Any]]]:
        return self._s("request_finished").request_finished(request, block_ids)

    def notify_consumed(self, request_ids: Iterable[ReqId]) -> None:
        self._s("notify_consumed").notify_consumed(request_ids)

    # Worker Side Methods
    def register_kv_caches(self, kv_caches: Any, staging: Any = None) -> Any:
        return self._w("register_kv_caches").register_kv_caches(kv_caches, staging)

    def get_handshake_metadata(self) -> HandshakePayload:
        return self._w("get_handshake_metadata").get_handshake_metadata()

    def add_remote_agent(self, payload: Any) -> AgentMetadata:
        return self._w("add_remote_agent").add_remote_agent(payload)

    def relink(self, cluster_id: int) -> bool:
        return self._w("relink").relink(cluster_id)

    def bind_connector_metadata(self, meta: ConnectorMetadata) -> None:
        self._w("bind_connector_metadata").bind_connector_metadata(meta)

    def clear_connector_metadata(self) -> None:
        self._w("clear_connector_metadata").clear_connector_metadata()

    def start_load_kv(self, forward_context: Any = None, **kwargs: Any) -> None:
        self._w("start_load_kv").start_load_kv(forward_context, **kwargs)

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._w("wait_for_layer_load").wait_for_layer_load(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any = None, **kwargs: Any) -> None:
        self._w("save_kv_layer").save_kv_layer(layer_name, kv_layer, attn_metadata, **kwargs)

    def wait_for_save(self) -> None:
        self._w("wait_for_save").wait_for_save()

    def get_finished(self, finished_req_ids: Set[ReqId]) -> Tuple[Optional[Set[ReqId]], Optional[Set[ReqId]]]:
        return self._w("get_finished").get_finished(finished_req_ids)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        return self._w("get_block_ids_with_load_errors").get_block_ids_with_load_errors()

    def build_connector_worker_meta(self) -> WorkerMetadata:
        return self._w("build_connector_worker_meta").build_connector_worker_meta()

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.shutdown()
