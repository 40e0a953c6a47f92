# SPDX-License-Identifier: Apache-2.0
"""Transfer metrics of a running process (ours, not upstream).

Three ways to read what the core counts (csrc/common/metrics.h):

- `LLMDataDist.metrics()`: a plain dict snapshot (`snapshot()` here is the same for the process's
  initialized instance).
- Prometheus, when `prometheus_client` is installed (`pip install llm-datadist[metrics]`):
  `LLMDataDistCollector` for a server's own registry (`REGISTRY.register(LLMDataDistCollector())`,
  next to vLLM's metrics), or `serve(port)` / env `LLMDD_METRICS_PORT` for an HTTP endpoint of
  its own.
- A local unix socket (`serve_socket()` / env `LLMDD_METRICS_SOCKET`) that answers each
  connection with one JSON snapshot: what `llm-datadist top` and `llm-datadist metrics` read.

Metrics live in the process that moves the data, so the servers run in it (daemon threads) and
always report the instance initialized at the moment they are asked (upstream allows one per
process); with none initialized they report no instance. Nothing here imports prometheus_client
until a Prometheus function or class is used.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .status import _BY_VALUE

__all__ = [
    "KINDS", "snapshot", "process_snapshot", "LLMDataDistCollector", "serve", "serve_socket",
    "default_socket_path", "read_socket", "latency_quantile",
]

logger = logging.getLogger("llm_datadist")

# The operation kinds the core counts, in its order (csrc/common/metrics.h's OpKind).
KINDS: Tuple[str, ...] = ("pull_cache", "pull_blocks", "push_cache", "push_blocks", "serve_pull", "serve_push")

Snapshot = Dict[str, Any]


def _code_name(code: int) -> str:
    row = _BY_VALUE.get(int(code))
    if row is None:
        return f"UNKNOWN_STATUS({int(code)})"
    return str(row["python_name"] or row["cpp_name"])


def _named_kinds(kinds: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kind, k in kinds.items():
        entry = dict(k)
        entry["errors_by_code"] = {_code_name(code): n for code, n in dict(k["errors_by_code"]).items()}
        out[kind] = entry
    return out


def from_core(raw: Dict[str, Any]) -> Snapshot:
    """The core's snapshot with error codes as their names (what LLMDataDist.metrics() returns)."""
    out = dict(raw)
    out["totals"] = _named_kinds(raw["totals"])
    out["unlinked"] = _named_kinds(raw["unlinked"])
    out["links"] = {int(peer): dict(link, kinds=_named_kinds(link["kinds"])) for peer, link in raw["links"].items()}
    out["pools"] = dict(raw["pools"])
    out["latency_bounds_s"] = list(raw["latency_bounds_s"])
    return out


def _current_instance() -> Any:
    from . import llm_datadist as _llm
    return _llm._initialized_instance


def snapshot(llm: Any = None) -> Optional[Snapshot]:
    """`llm.metrics()`, or the process's initialized instance's; None when there is none."""
    target = llm if llm is not None else _current_instance()
    if target is None:
        return None
    try:
        return target.metrics()  # type: ignore[no-any-return]
    except Exception:  # finalized between the look-up and the call
        return None


def process_snapshot(llm: Any = None) -> Dict[str, Any]:
    """What the socket serves: {"pid", "time" (unix seconds), "instance": snapshot or None}."""
    return {"pid": os.getpid(), "time": time.time(), "instance": snapshot(llm)}


def latency_quantile(bounds_s: List[float], buckets: List[int], q: float) -> Optional[float]:
    """The q-quantile (0..1) of a histogram in the core's buckets (per bucket, not cumulative; the
    last is the overflow), linearly interpolated inside its bucket; None when it is empty."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            lower = bounds_s[i - 1] if i > 0 else 0.0
            upper = bounds_s[i] if i < len(bounds_s) else bounds_s[-1] * 2
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return bounds_s[-1]


# ---- Prometheus ---------------------------------------------------------------------------------

def _need_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError("Prometheus metrics need prometheus_client: pip install 'llm-datadist[metrics]'") from exc
    return prometheus_client


class LLMDataDistCollector:
    """A prometheus_client collector of one LLMDataDist's metrics (default: whichever instance the
    process has initialized when scraped), or of snapshots `source()` returns (e.g. read from
    another process's socket). Register it: `prometheus_client.REGISTRY.register(LLMDataDistCollector())`.

    Series (labels: cluster = this instance's cluster id, peer = the remote cluster id, or "" for
    operations that failed before a link was found; kind = pull_cache, pull_blocks, push_cache,
    push_blocks, serve_pull, serve_push):
      llmdd_bytes_total{cluster,peer,kind}, llmdd_operations_total{cluster,peer,kind} (completed),
      llmdd_errors_total{cluster,peer,kind,code}, llmdd_latency_seconds{cluster,peer,kind}
      (histogram of completed operations), llmdd_link_events_total{cluster,event=up|broken|closed},
      llmdd_link_info{cluster,peer,transport,channel,state} (1 per link), llmdd_links{cluster},
      llmdd_pool_used_bytes / llmdd_pool_capacity_bytes{cluster,pool=host|device},
      llmdd_metrics_enabled{cluster}.
    A link's series end when it is unlinked (a relinked peer starts from zero).
    """

    def __init__(self, llm: Any = None, source: Optional[Callable[[], Optional[Snapshot]]] = None) -> None:
        _need_prometheus()
        self._source: Callable[[], Optional[Snapshot]] = source if source is not None else (lambda: snapshot(llm))

    def describe(self) -> List[Any]:
        # Nothing to check at registration (the series depend on the links at scrape time).
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        snap = self._source()
        if snap is None:
            return
        cluster = str(snap["cluster_id"])
        bounds = list(snap["latency_bounds_s"])
        by = ["cluster", "peer", "kind"]
        nbytes = CounterMetricFamily("llmdd_bytes", "Bytes moved by completed operations", labels=by)
        ops = CounterMetricFamily("llmdd_operations", "Completed operations", labels=by)
        errors = CounterMetricFamily("llmdd_errors", "Failed operations by status code", labels=by + ["code"])
        latency = HistogramMetricFamily("llmdd_latency_seconds", "Latency of completed operations", labels=by)
        parts: List[Tuple[str, Dict[str, Any]]] = [(str(peer), link["kinds"]) for peer, link in snap["links"].items()]
        # (the owner side always has a link: no serve_* series without one)
        parts.append(("", {k: v for k, v in snap["unlinked"].items() if not k.startswith("serve_")}))
        for peer, kinds in parts:
            for kind, k in kinds.items():
                labels = [cluster, peer, kind]
                nbytes.add_metric(labels, k["bytes"])
                ops.add_metric(labels, k["operations"])
                for code, n in k["errors_by_code"].items():
                    errors.add_metric(labels + [code], n)
                cumulative: List[Tuple[str, float]] = []
                running = 0
                for bound, n in zip(bounds, k["latency_buckets"]):
                    running += n
                    cumulative.append((repr(float(bound)), running))
                cumulative.append(("+Inf", running + sum(k["latency_buckets"][len(bounds):])))
                latency.add_metric(labels, cumulative, sum_value=k["latency_ns_sum"] / 1e9)
        yield from (nbytes, ops, errors, latency)
        events = CounterMetricFamily("llmdd_link_events", "Links that came up, broke, closed", labels=["cluster", "event"])
        for event in ("up", "broken", "closed"):
            events.add_metric([cluster, event], snap[f"links_{event}"])
        yield events
        info = GaugeMetricFamily("llmdd_link_info", "One per link: its transport and state",
                                 labels=["cluster", "peer", "transport", "channel", "state"])
        for peer, link in snap["links"].items():
            info.add_metric([cluster, str(peer), link["transport"], link["channel"], link["state"]], 1)
        yield info
        yield _gauge(GaugeMetricFamily, "llmdd_links", "Links of this instance", cluster, len(snap["links"]))
        used = GaugeMetricFamily("llmdd_pool_used_bytes", "Bytes allocated from the pool", labels=["cluster", "pool"])
        capacity = GaugeMetricFamily("llmdd_pool_capacity_bytes", "Size of the pool", labels=["cluster", "pool"])
        for pool, stats in snap["pools"].items():
            if stats:
                used.add_metric([cluster, pool], stats["used_bytes"])
                capacity.add_metric([cluster, pool], stats["capacity"])
        yield from (used, capacity)
        yield _gauge(GaugeMetricFamily, "llmdd_metrics_enabled", "1 when the core records metrics (llmdd.Metrics)",
                     cluster, 1 if snap["enabled"] else 0)


def _gauge(family: Any, name: str, doc: str, cluster: str, value: float) -> Any:
    g = family(name, doc, labels=["cluster"])
    g.add_metric([cluster], value)
    return g


def exposition(source: Callable[[], Optional[Snapshot]]) -> str:
    """The Prometheus text format of the snapshots `source()` returns."""
    prometheus_client = _need_prometheus()
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(LLMDataDistCollector(source=source))
    return prometheus_client.generate_latest(registry).decode()  # type: ignore[no-any-return]


_servers_lock = threading.Lock()
_http_servers: Dict[Tuple[str, int], Any] = {}


def serve(port: int, addr: str = "127.0.0.1", llm: Any = None) -> int:
    """Serves /metrics over HTTP at addr:port from a daemon thread (its own registry holding one
    LLMDataDistCollector), once per address; returns the port (the one bound when port is 0).
    addr defaults to loopback: pass "0.0.0.0" for a scraper on another host."""
    prometheus_client = _need_prometheus()
    with _servers_lock:
        if (addr, port) in _http_servers and port != 0:
            return port
        registry = prometheus_client.CollectorRegistry(auto_describe=False)
        registry.register(LLMDataDistCollector(llm))
        started = prometheus_client.start_http_server(port, addr=addr, registry=registry)
        server = started[0] if isinstance(started, tuple) else None
        bound = int(server.server_port) if server is not None else port
        _http_servers[(addr, bound)] = started
        logger.info("llm_datadist metrics: Prometheus endpoint at http://%s:%d/metrics", addr, bound)
        return bound


# ---- the local socket (llm-datadist top / metrics) ------------------------------------------------

def default_socket_path(pid: Optional[int] = None) -> str:
    """Where a process's socket is when LLMDD_METRICS_SOCKET=1: /tmp/llm-datadist-<pid>.sock."""
    return os.path.join("/tmp", f"llm-datadist-{os.getpid() if pid is None else int(pid)}.sock")


_SOCKET_IO_TIMEOUT_S = 2.0
_socket_servers: Dict[str, threading.Thread] = {}


def serve_socket(path: Optional[str] = None, llm: Any = None) -> str:
    """Listens on a unix socket at `path` (default: default_socket_path()), mode 0600 (this user
    only), and answers every connection with one JSON line, process_snapshot(), then closes it.
    Returns the path. A stale socket file at the path is replaced; the file goes at exit."""
    path = path or default_socket_path()
    with _servers_lock:
        if path in _socket_servers:
            return path
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: no window in which another user may connect
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        listener.listen(8)
        thread = threading.Thread(target=_socket_loop, args=(listener, llm), name="llmdd-metrics-socket", daemon=True)
        thread.start()
        _socket_servers[path] = thread
        import atexit
        atexit.register(_remove_socket, path)
        logger.info("llm_datadist metrics: snapshot socket at %s", path)
        return path


def _remove_socket(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _socket_loop(listener: socket.socket, llm: Any) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.settimeout(_SOCKET_IO_TIMEOUT_S)
                conn.sendall(json.dumps(process_snapshot(llm)).encode() + b"\n")
            except Exception as exc:  # a reader that went away; the server keeps serving
                logger.debug("llm_datadist metrics socket: %s", exc)


def read_socket(path: str, timeout_s: float = _SOCKET_IO_TIMEOUT_S) -> Dict[str, Any]:
    """One snapshot from a process's socket (connect and read bounded by timeout_s). Links are keyed
    by remote cluster id as ints again (JSON made them strings)."""
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        chunks = []
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: no complete snapshot within {timeout_s} s")
    data: Dict[str, Any] = json.loads(b"".join(chunks))
    inst = data.get("instance")
    if inst:
        inst["links"] = {int(k): v for k, v in inst["links"].items()}
    return data


# ---- started by LLMDataDist.init from the environment ---------------------------------------------

def start_from_env() -> None:
    """LLMDD_METRICS_PORT=N (HTTP, address LLMDD_METRICS_ADDR, default 127.0.0.1) and
    LLMDD_METRICS_SOCKET=1 or a path. A server that cannot start is a warning, not a failed init."""
    port = os.environ.get("LLMDD_METRICS_PORT", "").strip()
    if port:
        try:
            serve(int(port), os.environ.get("LLMDD_METRICS_ADDR", "127.0.0.1") or "127.0.0.1")
        except (ImportError, ValueError, OSError) as exc:
            logger.warning("LLMDD_METRICS_PORT=%s: no Prometheus endpoint: %s", port, exc)
    where = os.environ.get("LLMDD_METRICS_SOCKET", "").strip()
    if where and where != "0":
        try:
            serve_socket(None if where == "1" else where)
        except OSError as exc:
            logger.warning("LLMDD_METRICS_SOCKET=%s: no metrics socket: %s", where, exc)
