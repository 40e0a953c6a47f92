# SPDX-License-Identifier: Apache-2.0
"""Rank-table links: upstream's `link(comm_name, cluster_rank_info, rank_table) -> comm_id`,
`query_register_mem_status(comm_id)` and `unlink(comm_id)`, built on our point-to-point links.

Upstream builds an HCCL communicator from a 2..4-member rank table; every member calls `link` at
about the same time, gets a comm id at once and polls `query_register_mem_status` until OK (or
FAILED) before pulling. Here each pair of members becomes one of the links `link_clusters`
makes: the member with the lower rank listens at its rank-table address, the higher one
connects to it, retrying until the peer is up or the link time runs out. Code written for
vllm-ascend, MindIE or omni-infer (register, link, poll, pull_blocks, unlink) runs unchanged.

Addresses: a member is the rank table's device entry whose `rank_id` is its rank; it is reached
at that entry's `device_ip` and at port `device_port` when the entry has one, else
LLMDD_COMM_BASE_PORT (default 26100) + its `device_id`, so that several workers on one host
(one IP, one device each) get distinct ports. The link time is upstream's: option
`llm.LinkTotalTime` (seconds), or when it is 0 or unset HCCL_CONNECT_TIMEOUT (seconds, default
120).

Two comms over the same pair of clusters share that pair's link; it is unlinked when the last
comm using it is.

Codes, as upstream's: argument checks in upstream's order (its v2/llm_datadist.py `link`), a
rank table that cannot be linked (unparsable, a rank missing, a comm name in use) is
LLM_LINK_FAILED (upstream hands the table to HCCL and reports any failure of that as
LLM_LINK_FAILED), and a comm id that is not linked is LLM_NOT_YET_LINK in `unlink` and
`query_register_mem_status` (upstream's CommLinkManager).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ._validation import check_int, check_type, param_invalid
from .llm_types import RegisterMemStatus
from .status import LLMException, LLMStatusCode, code_2_status

__all__ = ["CommRegistry", "Member", "parse_members"]

logger = logging.getLogger("llm_datadist")

DEFAULT_BASE_PORT = 26100
MAX_COMM_NAME_CHARS = 127   # upstream: non-empty, shorter than 128
MAX_COMMS = 512             # upstream: at most 512 communicators per device
MIN_MEMBERS, MAX_MEMBERS = 2, 4
_RETRY_S = 0.05             # between connection attempts while a peer is not up yet
_ATTEMPT_MS = 1000          # one link_clusters attempt


@dataclass(frozen=True)
class Member:
    cluster_id: int
    rank: int
    ip: str
    port: int


def _link_failed(message: str) -> LLMException:
    return LLMException(message, status_code=LLMStatusCode.LLM_LINK_FAILED)


def _base_port() -> int:
    raw = os.environ.get("LLMDD_COMM_BASE_PORT", "")
    if not raw:
        return DEFAULT_BASE_PORT
    try:
        port = int(raw)
    except ValueError:
        raise param_invalid(f"LLMDD_COMM_BASE_PORT must be an integer, but got {raw!r}.") from None
    if not 1 <= port <= 65535:
        raise param_invalid(f"LLMDD_COMM_BASE_PORT must be in [1, 65535], but got {port}.")
    return port


def _as_int(value: Any, what: str) -> int:
    """Rank tables write numbers as strings ("0"); accept both, nothing else."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _link_failed(f"rank_table: {what} must be an integer or a string of one, but got {value!r}.")
    try:
        return int(value)
    except ValueError:
        raise _link_failed(f"rank_table: {what} must be an integer, but got {value!r}.") from None


def check_link_args(comm_name: Any, cluster_rank_info: Any, rank_table: Any, own_cluster_id: int) -> Dict[int, int]:
    """Upstream's rules, in upstream's order: comm_name a str of 1..127 characters; a dict of at
    most 4 {cluster_id (uint64): rank (uint32)}; rank_table a str; at least 2 entries, ranks
    ascending in iteration order; this cluster among them."""
    check_type(comm_name, "comm_name", str)
    if not 0 < len(comm_name) <= MAX_COMM_NAME_CHARS:
        raise param_invalid(f"comm_name must have 1 to {MAX_COMM_NAME_CHARS} characters, but got "
                            f"{len(comm_name)}.")
    check_type(cluster_rank_info, "cluster_rank_info", dict)
    for cluster_id, rank in cluster_rank_info.items():
        check_type(cluster_id, "cluster_rank_info key", int)
        check_type(rank, f"cluster_rank_info[{cluster_id}]", int)
    if len(cluster_rank_info) > MAX_MEMBERS:
        raise param_invalid(f"cluster_rank_info must have {MIN_MEMBERS} to {MAX_MEMBERS} entries, but got "
                            f"{len(cluster_rank_info)}.")
    for cluster_id, rank in cluster_rank_info.items():
        check_int(cluster_id, "cluster_rank_info key", "uint64")
        check_int(rank, f"cluster_rank_info[{cluster_id}]", "uint32")
    check_type(rank_table, "rank_table", str)
    if len(cluster_rank_info) < MIN_MEMBERS:
        raise param_invalid(f"cluster_rank_info must have {MIN_MEMBERS} to {MAX_MEMBERS} entries, but got "
                            f"{len(cluster_rank_info)}.")
    ranks = list(cluster_rank_info.values())
    if any(b <= a for a, b in zip(ranks, ranks[1:])):
        raise param_invalid(f"cluster_rank_info ranks must be unique and ascending in order, but got {ranks}.")
    if own_cluster_id not in cluster_rank_info:
        raise param_invalid(f"cluster_rank_info {dict(cluster_rank_info)} does not include this cluster "
                            f"({own_cluster_id}).")
    return dict(cluster_rank_info)


def parse_members(rank_table: Any, cluster_rank_info: Dict[int, int]) -> List[Member]:
    """The members' addresses from an HCCL rank table (version 1.0 or 1.2), in rank order.
    A table they cannot be read from: LLMException LLM_LINK_FAILED."""
    check_type(rank_table, "rank_table", str)
    try:
        table = json.loads(rank_table)
    except ValueError as exc:
        raise _link_failed(f"rank_table is not valid JSON: {exc}.") from None
    servers = table.get("server_list") if isinstance(table, dict) else None
    if not isinstance(servers, list):
        raise _link_failed("rank_table has no server_list (an HCCL rank table, version 1.0 or 1.2, is expected).")
    base = _base_port()
    by_rank: Dict[int, Tuple[str, int]] = {}  # rank -> (ip, port)
    for s, server in enumerate(servers):
        devices = server.get("device") if isinstance(server, dict) else None
        if not isinstance(devices, list):
            raise _link_failed(f"rank_table server_list[{s}] has no device list.")
        for d, device in enumerate(devices):
            where = f"server_list[{s}].device[{d}]"
            if not isinstance(device, dict) or "rank_id" not in device:
                raise _link_failed(f"rank_table {where} has no rank_id.")
            rank = _as_int(device["rank_id"], f"{where}.rank_id")
            ip = device.get("device_ip")
            if not isinstance(ip, str):
                raise _link_failed(f"rank_table {where} (rank {rank}) has no device_ip.")
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise _link_failed(f"rank_table {where}.device_ip {ip!r} is not an IP address.") from None
            if "device_port" in device:
                port = _as_int(device["device_port"], f"{where}.device_port")
            else:
                port = base + _as_int(device.get("device_id", 0), f"{where}.device_id")
            if not 1 <= port <= 65535:
                raise _link_failed(f"rank_table {where} (rank {rank}) gives port {port}, outside [1, 65535].")
            if rank in by_rank:
                raise _link_failed(f"rank_table has rank_id {rank} twice.")
            by_rank[rank] = (ip, port)
    members = []
    for cluster_id, rank in cluster_rank_info.items():
        if rank not in by_rank:
            raise _link_failed(f"rank_table has no device with rank_id {rank} (cluster {cluster_id}); it has "
                               f"ranks {sorted(by_rank)}.")
        members.append(Member(cluster_id, rank, *by_rank[rank]))
    return members


class _Comm:
    """One rank-table link: its members, its state, and the thread that brings it up."""

    def __init__(self, comm_id: int, name: str, own: Member, peers: List[Member]) -> None:
        self.comm_id, self.name, self.own, self.peers = comm_id, name, own, peers
        self.status = RegisterMemStatus.PREPARING
        self.error = ""
        self.linked: List[int] = []   # peers whose link this comm holds a reference on
        # Links the higher-rank peers had made to us before this comm began (see _linked_in).
        self.installs_before: Dict[int, int] = {}
        self.cancel = threading.Event()
        self.thread: Optional[threading.Thread] = None


class CommRegistry:
    """The comms of one LLMDataDist instance. `engine` is its `_core.Engine`."""

    def __init__(self, engine: Any, own_cluster_id: int, link_total_s: float) -> None:
        self._engine = engine
        self._own = own_cluster_id
        self._link_total_s = link_total_s
        self._lock = threading.Lock()
        self._comms: Dict[int, _Comm] = {}
        self._refs: Dict[int, int] = {}   # peer cluster id -> comms holding its link
        self._next_id = 1

    # -- the API ---------------------------------------------------------------------------
    def link(self, comm_name: Any, cluster_rank_info: Any, rank_table: Any) -> int:
        ranks = check_link_args(comm_name, cluster_rank_info, rank_table, self._own)
        with self._lock:
            self._check_room()   # upstream checks the limit before it hands the table to HCCL
        members = parse_members(rank_table, ranks)
        own = next(m for m in members if m.cluster_id == self._own)
        peers = [m for m in members if m.cluster_id != self._own]
        with self._lock:
            for comm in self._comms.values():
                if comm.name == comm_name:   # upstream: HCCL's init fails for a name in use
                    raise _link_failed(f"comm_name {comm_name!r} is already linked (comm_id {comm.comm_id}); "
                                       f"unlink it first.")
            self._check_room()
            comm = _Comm(self._next_id, comm_name, own, peers)
            comm.installs_before = {p.cluster_id: self._engine.links_installed(p.cluster_id)
                                    for p in peers if p.rank > own.rank}
            self._next_id += 1
            self._comms[comm.comm_id] = comm
        if any(p.rank > own.rank for p in peers):
            try:
                self._engine.ensure_listening(own.ip, own.port)   # higher ranks connect to us
            except Exception:
                with self._lock:
                    del self._comms[comm.comm_id]
                raise
        comm.thread = threading.Thread(target=self._bring_up, args=(comm,), daemon=True,
                                       name=f"llmdd-comm-{comm.comm_id}")
        comm.thread.start()
        logger.info("link %r (comm_id %d): cluster %d rank %d at %s:%d, peers %s", comm_name, comm.comm_id,
                    own.cluster_id, own.rank, own.ip, own.port,
                    ", ".join(f"{p.cluster_id}@{p.ip}:{p.port}" for p in peers))
        return comm.comm_id

    def status(self, comm_id: Any) -> RegisterMemStatus:
        return self._find(comm_id).status

    def info(self, comm_id: Any) -> Dict[str, Any]:
        comm = self._find(comm_id)
        return {"comm_id": comm.comm_id, "status": comm.status, "error": comm.error}

    def unlink(self, comm_id: Any) -> None:
        comm = self._find(comm_id)
        self._stop(comm)
        with self._lock:
            self._comms.pop(comm.comm_id, None)
        self._release(comm)

    def close(self) -> None:
        """finalize: stops every comm's thread before the engine goes (its links go with it)."""
        with self._lock:
            comms = list(self._comms.values())
            self._comms.clear()
            self._refs.clear()
        for comm in comms:
            self._stop(comm)

    # -- internals -------------------------------------------------------------------------
    def _check_room(self) -> None:
        if len(self._comms) >= MAX_COMMS:
            raise param_invalid(f"{MAX_COMMS} comms are linked, the most there can be; unlink one first.")

    def _find(self, comm_id: Any) -> _Comm:
        check_int(comm_id, "comm_id", "uint64")
        with self._lock:
            comm = self._comms.get(comm_id)
        if comm is None:
            raise LLMException(f"comm_id {comm_id} is not linked (never returned by link, or unlinked).",
                               status_code=LLMStatusCode.LLM_NOT_YET_LINK)
        return comm

    @staticmethod
    def _stop(comm: _Comm) -> None:
        comm.cancel.set()
        if comm.thread is not None and comm.thread is not threading.current_thread():
            comm.thread.join(timeout=_ATTEMPT_MS / 1000 * 5)

    def _hold(self, comm: _Comm, peer: Member) -> None:
        with self._lock:
            self._refs[peer.cluster_id] = self._refs.get(peer.cluster_id, 0) + 1
        comm.linked.append(peer.cluster_id)

    def _release(self, comm: _Comm) -> None:
        to_unlink = []
        with self._lock:
            for cluster_id in comm.linked:
                left = self._refs.get(cluster_id, 0) - 1
                if left > 0:
                    self._refs[cluster_id] = left
                else:
                    self._refs.pop(cluster_id, None)
                    to_unlink.append(cluster_id)
            comm.linked = []
        if not to_unlink:
            return
        # The peer may be unlinking the same link at the same moment, or be gone: every code
        # leaves the local end torn down (docs/transfer.md), which is what unlink promises.
        for cluster_id, (code, message) in zip(to_unlink, self._engine.unlink_clusters(to_unlink, 3000, False)):
            status = code_2_status(code)
            if status != LLMStatusCode.LLM_SUCCESS:
                logger.info("unlink comm %d: cluster %d: %s: %s", comm.comm_id, cluster_id, status, message)

    def _linked_in(self, comm: _Comm, peer: Member) -> bool:
        # Linked if the link is up now, or if the peer made one since this comm began: a peer
        # that linked and unlinked again between two polls did link (its comm reports OK, so
        # must ours), and a live link alone would miss it.
        if self._engine.links_installed(peer.cluster_id) > comm.installs_before.get(peer.cluster_id, 0):
            return True
        info = self._engine.link_info(peer.cluster_id)
        return info is not None and info.get("state") == "active"

    def _bring_up(self, comm: _Comm) -> None:
        deadline = time.monotonic() + self._link_total_s
        pending = list(comm.peers)
        last: Dict[int, str] = {}
        while pending and not comm.cancel.is_set() and time.monotonic() < deadline:
            for peer in list(pending):
                if peer.rank < comm.own.rank:   # we connect to the lower rank
                    left_ms = int(max(1.0, (deadline - time.monotonic()) * 1000))
                    [(code, message)] = self._engine.link_clusters([(peer.cluster_id, peer.ip, peer.port)],
                                                                   min(_ATTEMPT_MS, left_ms))
                    status = code_2_status(code)
                    if status in (LLMStatusCode.LLM_SUCCESS, LLMStatusCode.LLM_ALREADY_LINK):
                        pending.remove(peer)
                        self._hold(comm, peer)
                    elif status in (LLMStatusCode.LLM_LINK_FAILED, LLMStatusCode.LLM_PROCESSING_LINK):
                        last[peer.cluster_id] = f"{status!s}: {message}"   # not up yet: retry
                    else:
                        self._fail(comm, f"cluster {peer.cluster_id} at {peer.ip}:{peer.port}: {status!s}: {message}")
                        return
                elif self._linked_in(comm, peer):     # the higher rank connects to us
                    pending.remove(peer)
                    self._hold(comm, peer)
                else:
                    last[peer.cluster_id] = f"cluster {peer.cluster_id} has not linked to {comm.own.ip}:{comm.own.port}"
            if pending:
                comm.cancel.wait(_RETRY_S)
        if comm.cancel.is_set():
            return
        if pending:
            self._fail(comm, f"not linked within {self._link_total_s:g} s (llm.LinkTotalTime / HCCL_CONNECT_TIMEOUT): "
                             + "; ".join(last.get(p.cluster_id, f"cluster {p.cluster_id}") for p in pending))
            return
        comm.status = RegisterMemStatus.OK
        logger.info("link %r (comm_id %d) is up", comm.name, comm.comm_id)

    def _fail(self, comm: _Comm, message: str) -> None:
        comm.error = message
        comm.status = RegisterMemStatus.FAILED
        logger.warning("link %r (comm_id %d) failed: %s", comm.name, comm.comm_id, message,
                       extra={"operation": "link", "comm_id": comm.comm_id})
        self._release(comm)
