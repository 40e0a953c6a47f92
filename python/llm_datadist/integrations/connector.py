# SPDX-License-Identifier: Apache-2.0
"""The engine-neutral core of the KV connector (pull mode: the decode reads the prefill's
blocks; the prefill keeps them until the decode says it has them, or until they expire).

``llm_datadist.integrations.vllm.LLMDataDistConnector`` is vLLM's face of this core; the serve
demo drives the core directly. Neither torch nor vLLM is imported here.

Scheduler half (``ConnectorScheduler``), one per engine:
- ``get_num_new_matched_tokens(request, num_computed_tokens)`` -> (tokens to load from the
  remote prefill, True): the load is asynchronous
- ``update_state_after_alloc(request, local_block_ids, num_external_tokens)``: where they land
- ``request_finished(request, block_ids)`` -> (delay_free, kv_transfer_params) on a prefill
- ``build_connector_meta()`` -> ``ConnectorMetadata`` for the workers, once per step

Worker half (``ConnectorWorker``), one per worker:
- ``register_kv_caches(cache_or_tensors, layout)``: a llm_datadist blocks cache, or equally
  shaped tensors registered in place (``register_blocks_cache``)
- ``get_handshake_metadata()`` / ``add_remote_agent(payload)``: versioned handshake, layout
  hash checked before decoding, then ``link_clusters``
- ``bind_connector_metadata(meta)``: a prefill arms a *ticket* per finished request (below)
- ``start_load_kv()``: queues the pulls on a background thread and returns
- ``get_finished()`` -> (done_sending, done_recving) from real completions
- ``get_block_ids_with_load_errors()``: blocks of failed loads, for the engine to recompute
- push mode (below): ``save_kv_layer(layer, wait)`` / ``wait_for_save()`` on a prefill

The "consumed" notice rides on an existing rule of the library, not on a new message: a
complete pull of a request-keyed slot of an allocated cache consumes the key on the owner, and
an allocated cache whose id reference was dropped is released when its last key goes. So the
prefill allocates a tiny one-slot *ticket* cache per request under ``CacheKey(prefill cluster,
ticket_id)`` and drops its own reference at once; the decode pulls that slot after its block
pull succeeded; the prefill sees the ticket cache gone and frees the blocks. A ticket not
pulled by its expiry is removed (``remove_cache_key``) and the blocks freed anyway.

Push mode (``ConnectorConfig.mode == "push"``): the request goes to both sides at once with the
same ``transfer_id`` in its kv_transfer_params (``kv_mode: "push"``). The decode allocates its
blocks, links to the prefill and publishes a *landing record* (``LandingRecord``: its layout
hash and block ids) under ``CacheKey(decode cluster, push_ticket_id(transfer_id))``. The prefill,
in the step that computes the request's prompt, reads the record (a CacheKey pull, which
consumes it) and pushes each layer into the decode's blocks as soon as the model has written it
(``save_kv_layer``), then arms a ticket under the same id on its own cluster. The decode pulls
that ticket: all layers have arrived (it was armed after the last push), and the prefill, seeing
it gone, frees its blocks. A record that does not come, a layout mismatch or a failed push
leave the ticket unarmed: the decode's wait ends at ``push_wait_s`` as a load error (the engine
recomputes), the prefill frees its blocks at once.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .health import HealthRegistry
from .metadata import (AgentMetadata, ConnectorMetadata, HandshakePayload, KVCacheLayout, LandingRecord, PushMeta,
                       RemoteMeta, ReqId, ReqMeta, SendLease, compute_compatibility_hash, decode_handshake,
                       encode_handshake)

__all__ = ["ConnectorConfig", "TransferRecord", "ConnectorScheduler", "ConnectorWorker", "ticket_id_of",
           "push_ticket_id"]

_log = logging.getLogger("llm_datadist.integrations")

# The ticket's one slot: small, but a real transfer over the link.
_TICKET_BYTES = 64
_U64 = 2**64 - 1


def ticket_id_of(engine_id: str, request_id: ReqId) -> int:
    """A request's ticket key (CacheKey.req_id): 63 bits of sha256(engine id, request id), so
    two engines' or two requests' tickets do not collide and 2**64-1 (padding) never occurs."""
    digest = hashlib.sha256(f"{engine_id}\0{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def push_ticket_id(transfer_id: str) -> int:
    """Push mode: the req_id of a transfer's landing record (on the decode) and of its done
    ticket (on the prefill), computed by both sides from the transfer id they were both given."""
    return ticket_id_of("push", transfer_id)


def _transfer_id(request: Any) -> str:
    return str(_params(request).get("transfer_id") or request.request_id)


@dataclass
class ConnectorConfig:
    layout: Optional[KVCacheLayout]  # None: taken from the tensors at register_kv_caches
    cluster_id: int
    host: str = "127.0.0.1"
    port: int = 0                    # the prefill's listen port (0: this side does not listen)
    engine_id: str = ""
    model_id: int = 0
    model_name: str = ""
    free_timeout_s: float = 30.0     # a prefill frees blocks whose ticket was not pulled by then
    link_timeout_ms: int = 3000
    retry_attempts: int = 4
    retry_deadline_s: float = 10.0
    retry_base_delay_s: float = 0.02
    notice_deadline_s: float = 5.0   # a decode tries this long to pull a ticket not armed yet
    mode: str = "pull"               # "push": the prefill writes into the decode's blocks
    push_wait_s: float = 30.0        # push: how long either side waits for the other's record/ticket


@dataclass
class TransferRecord:
    request_id: ReqId
    peer: int
    ok: bool
    elapsed_s: float
    attempts: int
    blocks: int
    error: Optional[Dict[str, Any]] = None
    notice_sent: bool = False


def _params(request: Any) -> Dict[str, Any]:
    return getattr(request, "kv_transfer_params", None) or {}


# ---- scheduler half ------------------------------------------------------------------------------

class ConnectorScheduler:
    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config
        self.handshake: Optional[Dict[str, Any]] = None   # this prefill's payload, sent with every request
        self._lock = threading.Lock()
        self._pending_recv: Dict[ReqId, ReqMeta] = {}
        self._pending_send: Dict[ReqId, SendLease] = {}
        self._pending_push: Dict[ReqId, PushMeta] = {}

    def set_handshake(self, payload: Dict[str, Any]) -> None:
        self.handshake = dict(payload)

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[int, bool]:
        if not _params(request).get("do_remote_prefill"):
            return 0, False
        n = len(request.prompt_token_ids) - num_computed_tokens
        return (n, True) if n > 0 else (0, False)

    def update_state_after_alloc(self, request: Any, local_block_ids: Sequence[int], num_external_tokens: int) -> None:
        params = _params(request)
        if not params.get("do_remote_prefill"):
            return
        params["do_remote_prefill"] = False        # loaded once, as vLLM's connectors do
        if num_external_tokens <= 0:
            return
        if params.get("kv_mode") == "push":
            remote = RemoteMeta(int(params["remote_cluster_id"]), str(params["remote_host"]),
                                int(params["remote_port"]), [], int(params.get("remote_model_id", 0)),
                                str(params.get("remote_engine_id", "")), push_ticket_id(_transfer_id(request)))
            with self._lock:
                self._pending_recv[request.request_id] = ReqMeta(
                    request.request_id, list(local_block_ids), remote, num_external_tokens, push=True,
                    prompt_tokens=len(request.prompt_token_ids))
            return
        remote = RemoteMeta.from_params(params)
        # The blocks to load are the tail of both lists (a local prefix hit covers the head).
        n = min(len(local_block_ids), len(remote.block_ids))
        local = list(local_block_ids)[len(local_block_ids) - n:]
        with self._lock:
            self._pending_recv[request.request_id] = ReqMeta(request.request_id, local, remote.with_blocks(
                remote.block_ids[len(remote.block_ids) - n:]), num_external_tokens)

    @staticmethod
    def is_push_prefill(request: Any) -> bool:
        params = _params(request)
        return bool(params.get("do_remote_decode")) and params.get("kv_mode") == "push"

    def queue_push(self, request: Any, block_ids: Sequence[int]) -> None:
        """Push mode, on a prefill: the request's prompt is computed in the step being built;
        its workers push ``block_ids`` to the decode named in its kv_transfer_params."""
        params = _params(request)
        meta = PushMeta(request.request_id, list(block_ids), len(request.prompt_token_ids),
                        int(params["remote_cluster_id"]), push_ticket_id(_transfer_id(request)),
                        time.time() + self.config.free_timeout_s)
        with self._lock:
            self._pending_push[request.request_id] = meta

    def request_finished(self, request: Any, block_ids: Sequence[int]) -> Tuple[bool, Optional[Dict[str, Any]]]:
        """On a prefill, for a request that asked for a remote decode: keep its blocks and
        return what the decode needs to pull them (the engine hands it to the client). Push
        mode: keep them until the workers report the push confirmed (or failed, or expired)."""
        if not _params(request).get("do_remote_decode") or not block_ids:
            return False, None
        if self.is_push_prefill(request):
            return True, None
        c = self.config
        lease = SendLease(ticket_id_of(c.engine_id, request.request_id), time.time() + c.free_timeout_s)
        with self._lock:
            self._pending_send[request.request_id] = lease
        remote = RemoteMeta(c.cluster_id, c.host, c.port, list(block_ids), c.model_id, c.engine_id,
                            lease.ticket_id, lease.expires_at, self.handshake)
        return True, remote.to_params()

    def build_connector_meta(self) -> ConnectorMetadata:
        with self._lock:
            meta = ConnectorMetadata(self._pending_recv, self._pending_send, self._pending_push)
            self._pending_recv, self._pending_send, self._pending_push = {}, {}, {}
        return meta


# ---- worker half ---------------------------------------------------------------------------------

@dataclass
class _Lease:
    ticket_cache_id: Optional[int]     # None: no ticket could be armed; freed at the expiry only
    ticket_key: Any
    expires_at: float


@dataclass
class _PushJob:
    """A push in flight on a prefill: its layers become ready as the model saves them."""
    meta: PushMeta
    ready: List[threading.Event]
    waits: List[Optional[Callable[[], None]]]
    # Set by the push thread: the lease on the blocks (ticket armed), or None (push failed).
    result: Optional[_Lease] = None
    finished: threading.Event = field(default_factory=threading.Event)


class ConnectorWorker:
    def __init__(self, config: ConnectorConfig, datadist: Any, health: Optional[HealthRegistry] = None) -> None:
        self.config = config
        self.datadist = datadist
        self.health = health
        self.layout: Optional[KVCacheLayout] = config.layout
        self.compatibility_hash = compute_compatibility_hash(config.layout) if config.layout else ""
        self.cache: Any = None
        self.staging: Any = None
        self.agents: Dict[int, AgentMetadata] = {}
        self.transfers: Dict[ReqId, TransferRecord] = {}
        self.expired: Set[ReqId] = set()          # leases freed by the expiry, not by a notice
        self._meta: Optional[ConnectorMetadata] = None
        self._leases: Dict[ReqId, _Lease] = {}
        self._lock = threading.Lock()             # guards what the load thread writes
        self._done_recving: Set[ReqId] = set()
        self._load_errors: Set[int] = set()
        self._registered: List[int] = []
        self._ticket_sink: Any = None
        self._jobs: "queue.Queue[Optional[ReqMeta]]" = queue.Queue()
        self._loader: Optional[threading.Thread] = None
        self._closed = False
        # push mode
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._saving: List[_PushJob] = []         # the jobs of the step being computed
        self._pushes: Dict[ReqId, _PushJob] = {}  # until reported in done_sending
        self._finished_reqs: Set[ReqId] = set()   # requests the engine said are finished

    # -- caches -----------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: Any, layout: Optional[KVCacheLayout] = None, staging: Any = None) -> Any:
        """A llm_datadist blocks cache (used as is), or a list of tensors of one shape
        ``[num_blocks, ...]`` and dtype, registered in place as one blocks cache (under this
        cluster's BlocksCacheKey when it listens). ``staging``: an optional second blocks cache
        that loads land in first and are then copied from (swap_blocks)."""
        import llm_datadist as ld
        if layout is not None:
            self.layout = layout
            self.compatibility_hash = compute_compatibility_hash(layout)
        if self.layout is None:
            raise ValueError("register_kv_caches needs a KVCacheLayout (none in the config, none given)")
        if isinstance(kv_caches, (list, tuple)):
            tensors = list(kv_caches)
            if len(tensors) != self.layout.num_tensors:
                raise ValueError(f"{len(tensors)} tensors for a layout of {self.layout.num_tensors}")
            shape, dtype = list(tensors[0].shape), tensors[0].dtype
            for i, t in enumerate(tensors):
                if list(t.shape) != shape or t.dtype != dtype:
                    raise ValueError(f"tensor {i} is {list(t.shape)} {t.dtype}, tensor 0 {shape} {dtype}: "
                                     f"one blocks cache needs one shape and dtype")
                if not t.is_contiguous():
                    raise ValueError(f"tensor {i} ({list(t.shape)}, strides {t.stride()}) is not contiguous; "
                                     f"its blocks cannot be addressed as [num_blocks, block bytes]")
            placement = ld.Placement.DEVICE if tensors[0].device.type == "cuda" else ld.Placement.HOST
            desc = ld.CacheDesc(len(tensors), shape, getattr(ld.DataType, self.layout.dtype), placement)
            # under a key when peers address it: a prefill's blocks are pulled, a push decode's written
            exposed = self.config.port or self.config.mode == "push"
            key = ld.BlocksCacheKey(self.config.cluster_id, self.config.model_id) if exposed else None
            self.cache = self.datadist.cache_manager.register_blocks_cache(desc, [t.data_ptr() for t in tensors], key)
            self._registered.append(self.cache.cache_id)
        else:
            self.cache = kv_caches
        self.staging = staging
        return self.cache

    # -- handshake --------------------------------------------------------------------------
    def get_handshake_metadata(self) -> HandshakePayload:
        c = self.config
        if self.layout is None:
            raise ValueError("get_handshake_metadata before register_kv_caches: no layout yet")
        num_blocks = self.cache.cache_desc.shape[0] if self.cache is not None else 0
        return encode_handshake(AgentMetadata(c.cluster_id, c.host, c.port, c.model_id, num_blocks, self.layout,
                                              c.model_name, c.engine_id))

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
        for rid, lease in meta.reqs_to_send.items():
            self._arm_ticket(rid, lease)
        for rid, push in meta.reqs_to_push.items():
            layers = self.layout.num_layers if self.layout is not None else 0
            job = _PushJob(push, [threading.Event() for _ in range(layers)], [None] * layers)
            self._saving.append(job)
            self._pushes[rid] = job
            self._executor().submit(self._push, job)

    def clear_connector_metadata(self) -> None:
        self._meta = None

    def _arm_ticket(self, rid: ReqId, lease: SendLease) -> None:
        self._leases[rid] = self._make_ticket(rid, lease.ticket_id, lease.expires_at)

    def _make_ticket(self, rid: ReqId, ticket_id: int, expires_at: float) -> _Lease:
        import llm_datadist as ld
        cm = self.datadist.cache_manager
        key = ld.CacheKey(self.config.cluster_id, ticket_id, self.config.model_id)
        try:
            ticket = cm.allocate_cache(ld.CacheDesc(1, [1, _TICKET_BYTES], ld.DataType.DT_UINT8,
                                                    ld.Placement.HOST), [key])
        except ld.LLMException as exc:
            # No ticket (e.g. the host pool is full): the blocks are still held, until the expiry.
            _log.warning("%s", json.dumps({"event": "ticket_not_armed", "request_id": rid, "error": exc.to_dict()}),
                         extra={"request_id": rid, "operation": "consumed_notice", "error": exc.to_dict()})
            return _Lease(None, None, expires_at)
        cache_id = ticket.cache_id
        # Our reference goes now: the key alone keeps the ticket, so its pull releases it.
        cm.deallocate_cache(ticket)
        return _Lease(cache_id, key, expires_at)

    def held_requests(self) -> List[ReqId]:
        return list(self._leases)

    def _reap_leases(self) -> Set[ReqId]:
        done: Set[ReqId] = set()
        if not self._leases:
            return done
        # Whether a cache id is still alive is not in the public API (upstream has no such call);
        # the engine below it knows.
        engine = self.datadist.cache_manager._engine
        now = time.time()
        for rid, lease in list(self._leases.items()):
            if lease.ticket_cache_id is not None and not engine.has_cache(lease.ticket_cache_id):
                done.add(rid)                    # the decode pulled the ticket: it has the blocks
            elif now >= lease.expires_at:
                if lease.ticket_key is not None:
                    self.datadist.cache_manager.remove_cache_key(lease.ticket_key)
                self.expired.add(rid)
                done.add(rid)
            else:
                continue
            del self._leases[rid]
        return done

    # -- loads ------------------------------------------------------------------------------
    def start_load_kv(self, forward_context: Any = None, **kwargs: Any) -> None:
        """Queues this step's loads on the load thread and returns at once."""
        if self._meta is None or not self._meta.reqs_to_recv:
            return
        for req in self._meta.reqs_to_recv.values():
            if req.push:        # mostly waiting on the prefill: one thread each, not the load queue
                self._executor().submit(self._load, req)
                continue
            if self._loader is None:
                self._loader = threading.Thread(target=self._load_loop, name="llmdd-connector-load", daemon=True)
                self._loader.start()
            self._jobs.put(req)

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="llmdd-connector-push")
        return self._pool

    def _load_loop(self) -> None:
        while True:
            req = self._jobs.get()
            if req is None:
                return
            self._load(req)

    def _peer(self, req: ReqMeta) -> None:
        """Links to the request's prefill the first time it is seen (handshake from the params)."""
        if req.remote.cluster_id in self.agents:
            return
        from ..status import LLMException, LLMStatusCode
        if req.remote.handshake is None:
            raise LLMException(f"request {req.request_id}: prefill cluster {req.remote.cluster_id} is not linked "
                               f"and its kv_transfer_params carry no handshake",
                               status_code=LLMStatusCode.LLM_LINK_FAILED, context={"operation": "connector_handshake"})
        self.add_remote_agent(req.remote.handshake)

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
            if req.push:
                self._receive_push(req)
            else:
                self._peer(req)
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
            _log.error("%s", json.dumps({"event": "load_failed", "request_id": req.request_id,
                                         "peer": req.remote.cluster_id, "blocks": req.local_block_ids,
                                         "error": err}),
                       extra={"request_id": req.request_id, "operation": "pull_blocks",
                              "remote_cluster_id": req.remote.cluster_id, "error": err})
            if self.health is not None:
                self.health.peer(req.remote.cluster_id).record_failure(exc.status_code.name, exc.action, err)
            with self._lock:
                self.transfers[req.request_id] = rec
                self._load_errors.update(req.local_block_ids)
                self._done_recving.add(req.request_id)
            return
        rec = TransferRecord(req.request_id, req.remote.cluster_id, True, time.perf_counter() - t0,
                             attempts[0], len(req.local_block_ids))
        if self.health is not None:
            self.health.peer(req.remote.cluster_id).record_success()
        with self._lock:
            self.transfers[req.request_id] = rec
            self._done_recving.add(req.request_id)
        # push: the done ticket just pulled was the notice
        rec.notice_sent = True if req.push else self._send_notice(req)

    def _send_notice(self, req: ReqMeta) -> bool:
        """Pulls the request's ticket from the prefill (which frees its blocks when the ticket
        is gone). The prefill arms it one step after it returned the params, so a missing key
        is retried until notice_deadline_s or the lease's expiry, whichever is first."""
        import llm_datadist as ld
        if req.remote.ticket_id is None:
            return False
        key = ld.CacheKey(req.remote.cluster_id, req.remote.ticket_id, req.remote.model_id)
        deadline = min(time.monotonic() + self.config.notice_deadline_s,
                       time.monotonic() + max(0.0, (req.remote.expires_at or 0.0) - time.time()))
        try:
            self._pull_when_armed(key, self._sink(), deadline)
            return True
        except ld.LLMException as exc:
            _log.warning("%s", json.dumps({"event": "consumed_notice_failed", "request_id": req.request_id,
                                           "peer": req.remote.cluster_id, "error": exc.to_dict()}),
                         extra={"request_id": req.request_id, "operation": "consumed_notice",
                                "remote_cluster_id": req.remote.cluster_id, "error": exc.to_dict()})
            return False

    def _sink(self) -> Any:
        """A one-slot cache that pulled tickets land in (their bytes are not looked at). Pulls
        of one slot may share it: a ticket's pull is its notice, not its content."""
        import llm_datadist as ld
        with self._lock:
            if self._ticket_sink is None:
                self._ticket_sink = self.datadist.cache_manager.allocate_cache(
                    ld.CacheDesc(1, [1, _TICKET_BYTES], ld.DataType.DT_UINT8, ld.Placement.HOST))
            return self._ticket_sink

    def _pull_when_armed(self, key: Any, sink: Any, deadline: float, also_retry: Tuple[Any, ...] = ()) -> None:
        """Pulls a one-slot cache that the peer arms when it is ready (a ticket, a landing
        record): a key not there yet (or a code in ``also_retry``) is retried with backoff
        until ``deadline`` (time.monotonic()); past it, or on any other code, the last
        LLMException is raised."""
        import llm_datadist as ld
        retry_on = (ld.LLMStatusCode.LLM_KV_CACHE_NOT_EXIST,) + tuple(also_retry)
        delay = 0.005
        while True:
            try:
                self.datadist.cache_manager.pull_cache(key, sink, 0, tensor_num_per_layer=1)
                return
            except ld.LLMException as exc:
                if exc.status_code not in retry_on or time.monotonic() >= deadline or self._closed:
                    raise
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)

    # -- push mode --------------------------------------------------------------------------
    def _receive_push(self, req: ReqMeta) -> None:
        """Decode: links to the prefill, publishes the landing record, then waits for the done
        ticket (armed after the last layer was pushed). Raises on failure (a load error)."""
        import llm_datadist as ld
        c, remote, cm = self.config, req.remote, self.datadist.cache_manager
        if self.layout is None:
            raise ValueError("push load before register_kv_caches: no layout yet")
        if remote.cluster_id not in self.agents:
            agent = AgentMetadata(remote.cluster_id, remote.host, remote.port, remote.model_id, 0, self.layout,
                                  "", remote.engine_id)
            self._link(agent)       # the layout is checked by the prefill, against the record's hash
            self.agents[agent.cluster_id] = agent
        max_blocks = self.layout.blocks_for(req.prompt_tokens)
        record_key = ld.CacheKey(c.cluster_id, remote.ticket_id, c.model_id)
        data = LandingRecord.encode(self.compatibility_hash, req.local_block_ids, max_blocks)
        record = cm.allocate_cache(ld.CacheDesc(1, [1, len(data)], ld.DataType.DT_UINT8, ld.Placement.HOST),
                                   [record_key])
        record.numpy(0).reshape(-1)[:] = np.frombuffer(data, dtype=np.uint8)
        cm.deallocate_cache(record)          # the key holds it now; the prefill's pull frees it
        done_key = ld.CacheKey(remote.cluster_id, remote.ticket_id, remote.model_id)
        try:
            self._pull_when_armed(done_key, self._sink(), time.monotonic() + c.push_wait_s)
        except Exception:
            try:
                cm.remove_cache_key(record_key)   # not read (or read and failed): withdraw it
            except ld.LLMException:
                pass
            raise

    def save_kv_layer(self, layer: int, wait: Optional[Callable[[], None]] = None) -> None:
        """Prefill: the model has written layer ``layer`` of this step's requests (``wait``,
        when given, blocks until those writes are visible, e.g. a CUDA event's synchronize);
        their pushes of that layer may start."""
        for job in self._saving:
            if 0 <= layer < len(job.ready):
                job.waits[layer] = wait
                job.ready[layer].set()

    def wait_for_save(self) -> None:
        """The step's forward is over: every layer is written, whatever save_kv_layer saw. It
        does not wait for the pushes: the blocks they read stay held (request_finished delays
        their free) until the push is confirmed, failed or expired (done_sending)."""
        for job in self._saving:
            for ready in job.ready:
                ready.set()
        self._saving = []

    def _read_landing_record(self, meta: PushMeta, max_blocks: int, deadline: float) -> List[int]:
        import llm_datadist as ld
        cm = self.datadist.cache_manager
        sink = cm.allocate_cache(ld.CacheDesc(1, [1, LandingRecord.size_for(max_blocks)], ld.DataType.DT_UINT8,
                                              ld.Placement.HOST))
        try:
            key = ld.CacheKey(meta.decode_cluster_id, meta.ticket_id, self.config.model_id)
            # the decode links to us and publishes the record when it has allocated its blocks
            self._pull_when_armed(key, sink, deadline, also_retry=(ld.LLMStatusCode.LLM_NOT_YET_LINK,))
            data = sink.numpy(0).reshape(-1).tobytes()
        finally:
            cm.deallocate_cache(sink)
        return LandingRecord.decode(data, self.compatibility_hash)

    def _push(self, job: _PushJob) -> None:
        """Prefill, on a pool thread: the record, each layer as it is saved, then the ticket."""
        import llm_datadist as ld
        from ..status import LLMException, LLMStatusCode
        c, meta, cm = self.config, job.meta, self.datadist.cache_manager
        t0 = time.perf_counter()
        error: Optional[Dict[str, Any]] = None
        try:
            assert self.layout is not None
            deadline = time.monotonic() + c.push_wait_s
            max_blocks = self.layout.blocks_for(meta.prompt_tokens)
            dst = self._read_landing_record(meta, max_blocks, deadline)
            src = meta.block_ids[:max_blocks]
            if len(dst) > len(src):
                raise LLMException(f"request {meta.request_id}: the decode asks for {len(dst)} blocks, the prompt "
                                   f"has {len(src)}", status_code=LLMStatusCode.LLM_PARAM_INVALID,
                                   context={"operation": "connector_push"})
            src = src[len(src) - len(dst):]        # a decode's prefix hit covers the head
            key = ld.BlocksCacheKey(meta.decode_cluster_id, c.model_id)
            for layer, ready in enumerate(job.ready):
                if not ready.wait(max(0.0, deadline - time.monotonic())) or self._closed:
                    raise LLMException(f"request {meta.request_id}: layer {layer} was not saved within "
                                       f"push_wait_s ({c.push_wait_s} s)", status_code=LLMStatusCode.LLM_TIMEOUT,
                                       context={"operation": "connector_push"})
                wait = job.waits[layer]
                if wait is not None:
                    wait()
                if dst:
                    cm.push_blocks(key, self.cache, src, dst, src_layer_range=range(layer, layer + 1),
                                   dst_layer_range=range(layer, layer + 1),
                                   tensor_num_per_layer=self.layout.tensors_per_layer)
            job.result = self._make_ticket(meta.request_id, meta.ticket_id, meta.expires_at)
        except Exception as exc:  # noqa: BLE001 - a failed push is reported, never raised
            if not isinstance(exc, LLMException):
                exc = LLMException(f"{type(exc).__name__}: {exc}", status_code=LLMStatusCode.LLM_FAILED,
                                   context={"operation": "connector_push"})
            error = dict(exc.to_dict(), request_id=meta.request_id)
            _log.error("%s", json.dumps({"event": "push_failed", "request_id": meta.request_id,
                                         "peer": meta.decode_cluster_id, "error": error}),
                       extra={"request_id": meta.request_id, "operation": "connector_push",
                              "remote_cluster_id": meta.decode_cluster_id, "error": error})
        rec = TransferRecord(meta.request_id, meta.decode_cluster_id, error is None, time.perf_counter() - t0, 1,
                             len(meta.block_ids), error, notice_sent=error is None)
        with self._lock:
            self.transfers[meta.request_id] = rec
        job.finished.set()

    def _collect_pushes(self) -> Set[ReqId]:
        """Pushes that ended: failed ones are done at once, pushed ones wait for the decode to
        pull their ticket (a lease). Only for requests the engine has finished, so their
        blocks are not freed under a running request."""
        done: Set[ReqId] = set()
        for rid, job in list(self._pushes.items()):
            if not job.finished.is_set() or rid not in self._finished_reqs:
                continue
            del self._pushes[rid]
            self._finished_reqs.discard(rid)
            if job.result is None:
                done.add(rid)
            else:
                self._leases[rid] = job.result
        return done

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None        # loads are whole requests, awaited by the engine through get_finished

    def get_finished(self, finished_req_ids: Optional[Set[ReqId]] = None) -> Tuple[Set[ReqId], Set[ReqId]]:
        """(done_sending, done_recving) since the last call: requests whose blocks a prefill
        freed (ticket pulled, or expired), and loads that ended (ok or failed).
        ``finished_req_ids``: the requests the engine finished since the last call (vLLM passes
        them); a push is reported only once its request is among them. None: do not wait."""
        self._finished_reqs |= set(self._pushes) if finished_req_ids is None else set(finished_req_ids) & set(self._pushes)
        sending = self._collect_pushes()
        sending |= self._reap_leases()
        with self._lock:
            recving, self._done_recving = self._done_recving, set()
        return sending, recving

    def get_block_ids_with_load_errors(self) -> Set[int]:
        with self._lock:
            bad, self._load_errors = self._load_errors, set()
        return bad

    def pop_transfer(self, request_id: ReqId) -> Optional[TransferRecord]:
        with self._lock:
            return self.transfers.pop(request_id, None)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stops the load thread (after the load in flight, at most timeout_s), unregisters
        what was registered and unlinks every peer."""
        self._closed = True
        for job in list(self._pushes.values()):
            for ready in job.ready:
                ready.set()                      # each push sees _closed and ends
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._loader is not None:
            self._jobs.put(None)
            self._loader.join(timeout_s)
            self._loader = None
        cm = self.datadist.cache_manager
        for cache_id in self._registered:
            try:
                cm.unregister_cache(cache_id)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self._registered.clear()
        if self.agents:
            try:
                self.datadist.unlink_clusters([self._cluster(a) for a in self.agents.values()],
                                              timeout=self.config.link_timeout_ms, force=True)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
            self.agents.clear()


def transfer_dict(rec: Optional[TransferRecord]) -> Optional[Dict[str, Any]]:
    return asdict(rec) if rec is not None else None
