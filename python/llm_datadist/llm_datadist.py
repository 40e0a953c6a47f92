# SPDX-License-Identifier: Apache-2.0
"""LLMDataDist: one instance per process (a "cluster"), upstream's entry point."""
from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _core
from ._logging import warn_once
from ._rank_table import CommRegistry
from ._validation import check_dict, check_int, check_type, param_invalid
from .cache_manager import CacheManager
from .configs import LLMClusterInfo, LLMRole, _parse_listen_ip_info
from .llm_types import RegisterMemStatus
from .status import LLMException, LLMStatusCode, code_2_status, not_initialized

__all__ = ["LLMDataDist"]

logger = logging.getLogger("llm_datadist")

_ROLE_OPTION = {LLMRole.PROMPT: "Prompt", LLMRole.DECODER: "Decoder", LLMRole.MIX: "Mix"}

# Upstream allows one initialized LLMDataDist per process.
_instance_lock = threading.Lock()
_initialized_instance: Optional["LLMDataDist"] = None


class LLMDataDist:
    """`LLMDataDist(role, cluster_id)`; `init(options)` from `LLMConfig.generate_options()`."""

    def __init__(self, role: LLMRole, cluster_id: int) -> None:
        check_type(role, "role", LLMRole)
        check_int(cluster_id, "cluster_id", "uint64")
        self._role = role
        self._cluster_id = cluster_id
        self._engine: Optional[_core.Engine] = None
        self._finalized = False  # finalize() ran: later calls say so (LLM_ENGINE_FINALIZED)
        self._cache_manager: Optional[CacheManager] = None
        self._options: Dict[str, str] = {}
        self._comms: Optional[CommRegistry] = None
        self.last_link_errors: Dict[int, Tuple[LLMStatusCode, str]] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def init(self, options: Dict[str, str]) -> None:
        """Initializes the instance (idempotent). Only one initialized instance per process."""
        global _initialized_instance
        check_dict(options, "options", str, str)
        with _instance_lock:
            if self._engine is not None:
                return
            if _initialized_instance is not None:
                raise LLMException("Cannot init multiple LLMDataDists", status_code=LLMStatusCode.LLM_FAILED)
            opts = dict(options)
            mem_max = opts.get("ge.flowGraphMemMaxSize")
            if mem_max is not None and not mem_max.isdigit():
                raise param_invalid(f"ge.flowGraphMemMaxSize {mem_max!r} must be a single decimal number.")
            opts["llm.Role"] = _ROLE_OPTION[self._role]
            if opts.get("llm.LocalCommRes") is not None:
                opts.setdefault("llm.EnableCacheManager", "1")
                opts.setdefault("llm.EnableRemoteCacheAccessible", "1")
            if opts.get("llm.EnableCacheManager", "1") != "1":
                # Upstream's legacy KvCacheManager (flow-graph) mode has no equivalent here;
                # CacheManager mode is what consumers use, so that is what runs.
                logger.info("llm.EnableCacheManager=%r: running in CacheManager mode (the only mode "
                            "this implementation has)", opts.get("llm.EnableCacheManager"))
            listen = opts.get("llm.listenIpInfo")
            if listen:
                ip, port = _parse_listen_ip_info(listen)
                opts["llm.ListenIp"], opts["llm.ListenPort"] = ip, str(port)
            engine = _core.Engine(self._cluster_id, _core.LlmRole(int(self._role)))
            engine.initialize(opts)
            self._engine = engine
            self._options = opts
            self._cache_manager = CacheManager(self, engine)
            self._comms = CommRegistry(engine, self._cluster_id, _link_total_seconds(opts))
            _initialized_instance = self
        logger.info("LLMDataDist cluster %d initialized (role %s, device backend %s: %s)", self._cluster_id,
                    self._role, engine.device_backend, engine.device_backend_reason)
        if os.environ.get("LLMDD_METRICS_PORT") or os.environ.get("LLMDD_METRICS_SOCKET"):
            from .metrics import start_from_env
            start_from_env()

    def finalize(self) -> None:
        """Closes every link, releases pools and caches; a no-op when not initialized. Views made with
        Cache.numpy()/torch() stay valid: they hold their memory until they are dropped."""
        global _initialized_instance
        with _instance_lock:
            if self._engine is None:
                return
            if self._cache_manager is not None:
                self._cache_manager._invalidate()
            if self._comms is not None:
                self._comms.close()  # their threads call the engine: stop them before it goes
                self._comms = None
            self._engine.finalize()
            self._engine = None
            self._cache_manager = None
            self._finalized = True
            if _initialized_instance is self:
                _initialized_instance = None

    def _check_init(self) -> _core.Engine:
        if self._engine is None:
            # Upstream raises RuntimeError with this message; LLMException is one, and carries a code.
            raise not_initialized(self._finalized)
        return self._engine

    # -- properties -----------------------------------------------------------------------
    @property
    def cluster_id(self) -> int:
        return self._cluster_id

    @property
    def role(self) -> LLMRole:
        return self._role

    @property
    def cache_manager(self) -> CacheManager:
        self._check_init()
        assert self._cache_manager is not None
        return self._cache_manager

    @property
    def kv_cache_manager(self) -> None:
        self._check_init()
        raise param_invalid("kv_cache_manager is not supported when llm.EnableCacheManager is configured "
                            "(this implementation runs CacheManager mode; use cache_manager).")

    @property
    def device_backend(self) -> str:
        """"cuda" or "cpu": what Placement.DEVICE means in this instance (ours, not upstream)."""
        return self._check_init().device_backend

    # -- role -----------------------------------------------------------------------------
    def switch_role(self, role: LLMRole, switch_options: Optional[Dict[str, str]] = None) -> None:
        """Changes the role label; `llm.listenIpInfo` in switch_options starts (or moves) the
        listener, its absence stops it. LLM_EXIST_LINK while any link exists."""
        engine = self._check_init()
        check_type(role, "role", LLMRole)
        check_dict(switch_options, "switch_options", str, str, allow_none=True)
        listen = (switch_options or {}).get("llm.listenIpInfo", "")
        if listen:
            _parse_listen_ip_info(listen)
        engine.switch_role(_core.LlmRole(int(role)), listen)
        self._role = role
        if listen:
            self._options["llm.listenIpInfo"] = listen
        else:
            self._options.pop("llm.listenIpInfo", None)

    # -- links ----------------------------------------------------------------------------
    @staticmethod
    def _check_clusters(clusters: Sequence[LLMClusterInfo], timeout: int) -> List[int]:
        """Upstream's checks of a link or unlink call (v2/llm_datadist.py), in its order; there is
        no limit on the number of clusters (16 are linked at once, the rest wait their turn).
        Returns the clusters' remote_cluster_id values, each checked to be set."""
        check_int(timeout, "timeout", "int32")
        if timeout <= 0:
            raise param_invalid(f"timeout must be > 0 ms, but got {timeout}.")
        check_type(clusters, "clusters", (list, tuple))
        for i, cluster in enumerate(clusters):
            check_type(cluster, f"clusters[{i}]", LLMClusterInfo)
        ids: List[int] = [check_int(cluster.remote_cluster_id, "remote_cluster_id", "uint64") for cluster in clusters]
        return ids

    @staticmethod
    def _overall(results: List[LLMStatusCode]) -> LLMStatusCode:
        overall = LLMStatusCode.LLM_SUCCESS
        for code in results:
            if code != LLMStatusCode.LLM_SUCCESS:
                overall = code
        return overall

    def link_clusters(self, clusters: Sequence[LLMClusterInfo],
                      timeout: int = 3000) -> Tuple[LLMStatusCode, List[LLMStatusCode]]:
        """Links the clusters (each by its single remote_ip_info, the peer's listen address) in
        parallel. Returns (overall, per-cluster codes) and does not raise for link failures;
        the reasons are logged at warning level and kept in last_link_errors."""
        engine = self._check_init()
        ids = self._check_clusters(clusters, timeout)
        if not clusters:
            logger.warning("link_clusters: clusters is empty")
            return LLMStatusCode.LLM_PARAM_INVALID, []  # upstream's native call returns this
        if "llm.LocalCommRes" not in self._options and any(not c.local_ip_info_list for c in clusters):
            warn_once("link_clusters.local_ip_info",
                      "link_clusters: a cluster has no local_ip_info; this library needs none, but upstream "
                      "raises LLM_PARAM_INVALID unless option llm.LocalCommRes is set (call append_local_ip_info).")
        results: List[Optional[LLMStatusCode]] = [None] * len(clusters)
        messages: List[str] = [""] * len(clusters)
        targets: List[Tuple[int, str, int]] = []
        positions: List[int] = []
        for i, cluster in enumerate(clusters):
            remote = cluster.remote_ip_info_list
            if len(remote) != 1 or remote[0][1] == 0 or remote[0][0] == 0:
                results[i] = LLMStatusCode.LLM_PARAM_INVALID
                messages[i] = (f"cluster {cluster.remote_cluster_id} needs exactly one remote ip info with a "
                               f"non-zero ip and port, got {remote}")
                continue
            targets.append((ids[i], LLMClusterInfo._ip_to_str(remote[0][0]), remote[0][1]))
            positions.append(i)
        for i, (code, message) in zip(positions, engine.link_clusters(targets, timeout)):
            results[i] = code_2_status(code)
            messages[i] = message
        return self._finish_link_call("link_clusters", ids, results, messages)

    def unlink_clusters(self, clusters: Sequence[LLMClusterInfo], timeout: int = 3000,
                        force: bool = False) -> Tuple[LLMStatusCode, List[LLMStatusCode]]:
        """Unlinks the clusters; force=True tears down only the local end (for broken links).
        Returns (overall, per-cluster codes) like link_clusters."""
        engine = self._check_init()
        ids = self._check_clusters(clusters, timeout)
        check_type(force, "force", bool)
        if not clusters:
            logger.warning("unlink_clusters: clusters is empty")
            return LLMStatusCode.LLM_PARAM_INVALID, []
        results: List[Optional[LLMStatusCode]] = []
        messages: List[str] = []
        for code, message in engine.unlink_clusters(ids, timeout, force):
            results.append(code_2_status(code))
            messages.append(message)
        return self._finish_link_call("unlink_clusters", ids, results, messages)

    def _finish_link_call(self, name: str, cluster_ids: Sequence[int], results: List[Optional[LLMStatusCode]],
                          messages: List[str]) -> Tuple[LLMStatusCode, List[LLMStatusCode]]:
        codes = [r if r is not None else LLMStatusCode.LLM_FAILED for r in results]
        self.last_link_errors = {}
        for cluster_id, code, message in zip(cluster_ids, codes, messages):
            if code != LLMStatusCode.LLM_SUCCESS:
                self.last_link_errors[cluster_id] = (code, message)
                logger.warning("%s: cluster %d: %s: %s", name, cluster_id, code, message,
                               extra={"operation": name, "remote_cluster_id": cluster_id})
        return self._overall(codes), codes

    def link_info(self, remote_cluster_id: int) -> Dict[str, object]:
        """What the link to a cluster is (ours, not upstream): transport ("shm", "cuda_ipc", "cma", "ucx"
        or "tcp": the first that serves it) and why,
        state ("active" / "broken") and why, counters. LLM_NOT_YET_LINK without a link."""
        engine = self._check_init()
        check_int(remote_cluster_id, "remote_cluster_id", "uint64")
        info = engine.link_info(remote_cluster_id)
        if info is None:
            raise LLMException(f"cluster {remote_cluster_id} is not linked.", status_code=LLMStatusCode.LLM_NOT_YET_LINK)
        return dict(info)

    def metrics(self) -> Dict[str, Any]:
        """What this instance has moved (ours, not upstream): a plain dict snapshot.

        {"enabled": False when llmdd.Metrics / LLMDD_METRICS is "0" (then nothing is counted),
         "cluster_id", "latency_bounds_s": bucket upper bounds (1 us .. 67 s, powers of two),
         "totals": {kind: counters} for every operation of this instance,
         "links": {remote_cluster_id: {"transport", "state", "channel", "peer_pid", "kinds": {kind: counters}}},
         "unlinked": {kind: counters} of operations that failed before a link was found,
         "links_up" / "links_broken" / "links_closed": link state changes,
         "pools": {"host": pool_stats or None, "device": ...}}
        with kinds pull_cache, pull_blocks, push_cache, push_blocks (this side asked), serve_pull,
        serve_push (a peer asked this side), and counters {"operations" (completed), "bytes",
        "errors", "errors_by_code": {"LLM_KV_CACHE_NOT_EXIST": n, ...}, "latency_ns_sum",
        "latency_buckets": completed operations per bucket (the last: above the last bound)}.
        Prometheus and `llm-datadist top`: llm_datadist.metrics."""
        from .metrics import from_core
        # Under the instance lock: the metrics servers' threads call this while another thread
        # may finalize (which frees what the snapshot reads).
        with _instance_lock:
            raw = dict(self._check_init().metrics())
        return from_core(raw)

    @property
    def listen_address(self) -> str:
        """"ip:port" this instance listens on, "" when it does not (ours)."""
        return self._check_init().listen_address

    # -- rank-table links (python/llm_datadist/_rank_table.py) ------------------------------
    def _comm_registry(self) -> CommRegistry:
        self._check_init()
        assert self._comms is not None
        return self._comms

    def link(self, comm_name: str, cluster_rank_info: Dict[int, int], rank_table: str) -> int:
        """Upstream's rank-table link: every member calls it with the same comm_name, ranks and
        HCCL rank table; returns a comm_id at once. Poll query_register_mem_status(comm_id) until
        OK before pulling. Each pair of members becomes one link (the lower rank listens at its
        rank-table address, the higher connects); see _rank_table.py for addresses and timing."""
        comm_id = self._comm_registry().link(comm_name, cluster_rank_info, rank_table)
        self.cache_manager._linked_by_rank_table = True  # upstream's set_is_call_linked
        return comm_id

    def unlink(self, comm_id: int) -> None:
        """Tears down a rank-table link (and each pair link no other comm uses)."""
        self._comm_registry().unlink(comm_id)

    def query_register_mem_status(self, comm_id: int) -> RegisterMemStatus:
        """PREPARING while the comm's links come up, then OK or FAILED (comm_info says why)."""
        return self._comm_registry().status(comm_id)

    def comm_info(self, comm_id: int) -> Dict[str, object]:
        """Ours, not upstream: a comm's status and, when FAILED, why."""
        return self._comm_registry().info(comm_id)

    def check_link_status(self, remote_cluster_id: int) -> None:
        self._check_init()
        raise param_invalid("check_link_status is not supported when llm.EnableCacheManager is configured.")


def _link_total_seconds(options: Dict[str, str]) -> float:
    """Upstream's time for a rank-table link: llm.LinkTotalTime seconds, or when that is 0 or
    unset HCCL_CONNECT_TIMEOUT seconds (default 120)."""
    for raw in (options.get("llm.LinkTotalTime", ""), os.environ.get("HCCL_CONNECT_TIMEOUT", "")):
        if raw.strip().isdigit() and int(raw) > 0:
            return float(int(raw))
    return 120.0


@atexit.register
def _finalize_at_exit() -> None:
    # Upstream finalizes the initialized instance at exit, swallowing LLMException.
    instance = _initialized_instance
    if instance is not None:
        try:
            instance.finalize()
        except LLMException:
            pass
