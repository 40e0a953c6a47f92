# SPDX-License-Identifier: Apache-2.0
"""Multi-process test harness: real worker processes driven over a line-based JSON protocol.

    w = Worker("prefill").start()          # python -m worker_main, own session (killable group)
    w.wait_ready()
    w.init(role="PROMPT", cluster_id=1, listen=True)      # listens on a free 127.0.0.1 port
    c = w.allocate(desc(4, [4, 16, 32]), keys=[req_key(1, 7)])
    w.fill(c, seed=3)
    d.link([cluster_of(w)])                # {"overall": "LLM_SUCCESS", "per_cluster": [...]}
    d.pull_cache(req_key(1, 7), dst, batch_index=2)
    d.verify(dst, seed=5, copies=slot_copies(c, 3, 0, dst, 2))

Every wait has a deadline: a reply not received in time, or a worker that died, fails the test
with the worker's stderr. `close()` SIGKILLs the worker's whole process group; `WorkerGroup`
and the fixtures in conftest.py close every worker at teardown, also on failure.

Patterns: `worker_main.pattern(seed, tensor, nbytes)`; the verify helpers below describe, as
segments, which bytes of a destination must come from which source tensor, and the worker
recomputes both sides and checks every byte (also the bytes outside the segments).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
U64MAX = 2**64 - 1
LOOPBACK = "127.0.0.1"

# Deadlines (seconds). Generous: a busy 2-core machine must never make them fire on a healthy
# implementation; they exist so that nothing ever hangs.
READY_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 30.0
SEND_TIMEOUT = 10.0

_live_workers: "set[Worker]" = set()
_live_lock = threading.Lock()


# ---- small helpers ------------------------------------------------------------------------------

def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def desc(num_tensors: int = 4, shape: Sequence[int] = (4, 16, 32), dtype: str = "DT_FLOAT16",
         placement: str = "DEVICE") -> Dict[str, Any]:
    """A CacheDesc as the protocol carries it."""
    return {"num_tensors": num_tensors, "shape": list(shape), "dtype": dtype, "placement": placement}


def req_key(cluster_id: int, req_id: int, model_id: int = 0) -> Dict[str, Any]:
    return {"kind": "req", "cluster_id": cluster_id, "req_id": req_id, "model_id": model_id}


def prefix_key(cluster_id: int, prefix_id: int, model_id: int = 0) -> Dict[str, Any]:
    return {"kind": "prefix", "cluster_id": cluster_id, "prefix_id": prefix_id, "model_id": model_id}


def pad_key(cluster_id: int) -> Dict[str, Any]:
    return {"kind": "pad", "cluster_id": cluster_id}


def id_key(cluster_id: int, cache_id: int, batch_index: int = 0) -> Dict[str, Any]:
    return {"kind": "id_index", "cluster_id": cluster_id, "cache_id": cache_id, "batch_index": batch_index}


def blocks_key(cluster_id: int, model_id: int = 0) -> Dict[str, Any]:
    return {"kind": "blocks", "cluster_id": cluster_id, "model_id": model_id}


def cluster(remote_cluster_id: int, port: Optional[int] = None, ip: str = LOOPBACK,
            remote: Optional[List[Tuple[str, int]]] = None,
            local: Optional[List[Tuple[str, int]]] = None) -> Dict[str, Any]:
    """An LLMClusterInfo: remote = [(ip, port)] (default: one, ip:port), local optional."""
    if remote is None:
        remote = [] if port is None else [(ip, port)]
    return {"remote_cluster_id": remote_cluster_id, "remote": [list(r) for r in remote],
            "local": [list(x) for x in (local or [])]}


def cluster_of(worker: "Worker", **kwargs: Any) -> Dict[str, Any]:
    """The cluster info that links to `worker` (its cluster id and listen address)."""
    assert worker.listen_port, f"{worker.name} does not listen"
    return cluster(worker.cluster_id, worker.listen_port, **kwargs)


# ---- replies and errors ------------------------------------------------------------------------

class WorkerFailure(AssertionError):
    """The harness could not get an answer: deadline passed, worker died, protocol broke."""


class RemoteError(Exception):
    """An operation failed in the worker; `.error` is LLMException.to_dict() (+ "type")."""

    def __init__(self, worker: "Worker", op: str, error: Dict[str, Any], reply: "Reply") -> None:
        self.worker_name = worker.name
        self.op = op
        self.error = error
        self.reply = reply
        super().__init__(f"{worker.name}: {op} raised {error.get('type')} {error.get('code')}: "
                         f"{error.get('message')}")

    @property
    def type(self) -> str:
        return self.error.get("type", "")

    @property
    def code(self) -> Optional[str]:
        return self.error.get("code")

    @property
    def message(self) -> str:
        return self.error.get("message", "")

    @property
    def action(self) -> Optional[str]:
        return self.error.get("action")


@dataclass
class Reply:
    op: str
    ok: bool
    result: Any = None
    error: Optional[Dict[str, Any]] = None
    elapsed_s: float = 0.0
    t_start: float = 0.0
    t_end: float = 0.0
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def code(self) -> Optional[str]:
        """LLMStatusCode name of the failure (None on success or a non-LLMException error)."""
        return None if self.ok else (self.error or {}).get("code")

    @property
    def message(self) -> str:
        return "" if self.ok else (self.error or {}).get("message", "")

    @classmethod
    def from_raw(cls, raw: Dict[str, Any]) -> "Reply":
        return cls(op=raw.get("op", "?"), ok=bool(raw.get("ok")), result=raw.get("result"), error=raw.get("error"),
                   elapsed_s=float(raw.get("elapsed_s", 0.0)), t_start=float(raw.get("t_start", 0.0)),
                   t_end=float(raw.get("t_end", 0.0)), raw=raw)


@dataclass
class CacheRef:
    """What the test knows about a cache living in a worker."""
    worker: str
    cache_id: int
    num_tensors: int
    shape: List[int]
    dtype: str
    placement: str
    tensor_bytes: int
    addrs: List[int]
    registered: bool = False
    blocks: bool = False

    @property
    def batch(self) -> int:
        """shape[0]: batch size of a contiguous cache, number of blocks of a blocks cache."""
        return self.shape[0]

    @property
    def slot_bytes(self) -> int:
        """Bytes of one batch slot (or one block) of one tensor."""
        return self.tensor_bytes // self.shape[0]

    block_bytes = slot_bytes


# ---- the worker --------------------------------------------------------------------------------

class Worker:
    """One child process running worker_main, with deadline-bounded request/reply."""

    def __init__(self, name: str, env: Optional[Dict[str, str]] = None, unset_env: Iterable[str] = (),
                 user: Optional[int] = None, wrap: Sequence[str] = ()) -> None:
        self.name = name
        # argv prefix that must exec the worker in place, e.g. ["ip", "netns", "exec", NAME]
        # (tests/twohost): the pid and the process group stay the worker's own
        self.wrap = list(wrap)
        self.env = dict(os.environ)
        # the child must not inherit test-time knobs by accident; tests pass them explicitly
        for var in ("LLMDD_TRANSPORT", "LLMDD_LINK_SECRET", *unset_env):
            self.env.pop(var, None)
        self.env.update(env or {})
        if user is not None:  # run as this uid (root only; worker_main drops to it): access-control tests
            self.env["LLMDD_TEST_WORKER_UID"] = str(user)
        self.env["PYTHONPATH"] = HERE + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        # log lines (info and up) land in the worker's stderr file, printed when a test fails
        self.env.setdefault("LLMDD_LOG_FORMAT", "text")
        self.env.setdefault("LLMDD_LOG_LEVEL", "info")
        self.proc: Optional[subprocess.Popen] = None
        self.pid = 0
        self.cluster_id: Optional[int] = None
        self.listen_port: Optional[int] = None
        self.listen: Optional[str] = None
        self.init_result: Dict[str, Any] = {}
        self._errfile = tempfile.NamedTemporaryFile(prefix=f"llmdd-{name}-", suffix=".stderr", delete=False)
        self._ids = itertools.count(1)
        self._replies: Dict[Any, Dict[str, Any]] = {}
        self._events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self._cond = threading.Condition()
        self._eof = False
        self._noise: List[str] = []
        self._pending_ops: Dict[int, str] = {}
        self._reader: Optional[threading.Thread] = None
        self._stopped = False
        self._closed = False
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, pid={self.pid}, cluster={self.cluster_id}, port={self.listen_port})"

    # -- process ----------------------------------------------------------------------------
    def start(self) -> "Worker":
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-u", "-m", "worker_main"], cwd=HERE, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errfile,
            start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        with _live_lock:
            _live_workers.add(self)
        self._reader = threading.Thread(target=self._read_loop, name=f"reader-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _read_loop(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                with self._cond:
                    self._noise.append(line)
                continue
            if "event" in msg:
                self._events.put(msg)
                continue
            with self._cond:
                self._replies[msg.get("id")] = msg
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        self._events.put({"event": "eof"})

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "Worker":
        try:
            msg = self._events.get(timeout=timeout)
        except queue.Empty:
            raise WorkerFailure(self._diagnose(f"not ready within {timeout:.0f} s")) from None
        if msg.get("event") != "ready" or not msg.get("ok"):
            raise WorkerFailure(self._diagnose(f"failed to start: {msg}"))
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def kill(self) -> float:
        """SIGKILL the worker (not waiting for replies); returns time.monotonic() of the kill."""
        t = time.monotonic()
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return t

    def freeze(self) -> float:
        """SIGSTOP; returns the monotonic time of the signal."""
        t = time.monotonic()
        self.signal(signal.SIGSTOP)
        self._stopped = True
        _wait_for(lambda: _proc_state(self.pid) in ("T", "t", None), 5.0)
        return t

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)
        self._stopped = False

    def close(self) -> None:
        """Kill the whole process group (also a frozen one) and release everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.proc is not None:
            if self.proc.poll() is None:  # not reaped yet: the pid is still ours
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(Exception):
                    if stream is not None:
                        stream.close()
        with _live_lock:
            _live_workers.discard(self)
        with contextlib.suppress(Exception):
            self._errfile.close()
        if not os.environ.get("LLMDD_TEST_KEEP_LOGS"):  # failures already carry the stderr tail
            with contextlib.suppress(OSError):
                os.unlink(self._errfile.name)

    def stderr_text(self, tail: int = 6000) -> str:
        try:
            with open(self._errfile.name, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - tail))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return "<stderr unavailable>"

    def _diagnose(self, what: str) -> str:
        rc = self.returncode()
        state = "running" if rc is None else f"exited with {rc}" + (
            f" ({signal.Signals(-rc).name})" if rc is not None and rc < 0 else "")
        noise = ("\nnon-protocol stdout:\n" + "\n".join(self._noise[-20:])) if self._noise else ""
        return (f"worker {self.name!r} (pid {self.pid}, {state}): {what}\n"
                f"---- stderr of {self.name} (tail) ----\n{self.stderr_text()}{noise}")

    # -- protocol ---------------------------------------------------------------------------
    def send(self, op: str, thread: bool = False, start_at: Optional[float] = None, **args: Any) -> int:
        """Sends a request without waiting; `wait(rid)` collects the reply."""
        if self.proc is None or self.proc.stdin is None:
            raise WorkerFailure(f"worker {self.name!r} was not started")
        rid = next(self._ids)
        msg: Dict[str, Any] = {"id": rid, "op": op, **args}
        if thread:
            msg["thread"] = True
        if start_at is not None:
            msg["start_at"] = start_at
        self._pending_ops[rid] = op
        data = (json.dumps(msg) + "\n").encode()
        try:
            self._write_all(data, SEND_TIMEOUT)
        except TimeoutError:  # (an OSError: caught first)
            raise WorkerFailure(self._diagnose(f"did not read request {op} within {SEND_TIMEOUT} s "
                                               f"(frozen or stuck)")) from None
        except OSError as exc:
            raise WorkerFailure(self._diagnose(f"cannot send {op}: {exc!r}")) from None
        return rid

    def _write_all(self, data: bytes, timeout: float) -> None:
        """Writes to the worker's stdin without ever blocking past `timeout` (a frozen worker
        stops reading, and a full pipe would otherwise block the test forever)."""
        assert self.proc is not None and self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        with self._write_lock:
            os.set_blocking(fd, False)
            deadline = time.monotonic() + timeout
            view = memoryview(data)
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                _, writable, _ = select.select([], [fd], [], min(left, 0.5))
                if not writable:
                    continue
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    continue
                view = view[n:]

    def wait(self, rid: int, deadline: float = DEFAULT_TIMEOUT) -> Reply:
        """The reply to request `rid`; fails the test after `deadline` seconds or if the worker dies."""
        op = self._pending_ops.get(rid, "?")
        timeout = deadline
        deadline = time.monotonic() + timeout
        with self._cond:
            while rid not in self._replies:
                if self._eof:
                    raise WorkerFailure(self._diagnose(f"died before answering {op} (request {rid})"))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerFailure(self._diagnose(f"no reply to {op} (request {rid}) within {timeout:.1f} s"))
                self._cond.wait(min(left, 0.5))
            raw = self._replies.pop(rid)
        self._pending_ops.pop(rid, None)
        return Reply.from_raw(raw)

    def request(self, op: str, deadline: float = DEFAULT_TIMEOUT, **args: Any) -> Reply:
        """Sends and waits (at most `deadline` s); returns the Reply whether the operation
        succeeded or not. `args` are the op's own arguments (e.g. link's `timeout` in ms)."""
        return self.wait(self.send(op, **args), deadline)

    def call(self, op: str, deadline: float = DEFAULT_TIMEOUT, **args: Any) -> Any:
        """Sends, waits, returns the result; a failed operation raises RemoteError."""
        reply = self.request(op, deadline, **args)
        if not reply.ok:
            raise RemoteError(self, op, reply.error or {}, reply)
        return reply.result

    def expect_error(self, code: str, op: str, match: Optional[str] = None, deadline: float = DEFAULT_TIMEOUT,
                     **args: Any) -> Reply:
        """Runs `op`, asserts it raised LLMException `code` (a LLMStatusCode name) whose message
        matches `match` (re.search); returns the Reply."""
        reply = self.request(op, deadline, **args)
        assert not reply.ok, f"{self.name}: {op}({_short(args)}) succeeded, expected {code}"
        got = reply.code or reply.error.get("type")
        assert got == code, (f"{self.name}: {op}({_short(args)}) raised {got}, expected {code}: "
                             f"{reply.message}")
        if match is not None:
            assert re.search(match, reply.message), (f"{self.name}: {op} message does not match "
                                                     f"{match!r}: {reply.message!r}")
        return reply

    # -- convenience wrappers ---------------------------------------------------------------
    def init(self, role: str = "PROMPT", cluster_id: int = 1, listen: Any = None, transport: Optional[str] = None,
             secret: Optional[str] = None, options: Optional[Dict[str, str]] = None,
             deadline: float = READY_TIMEOUT, **kwargs: Any) -> Dict[str, Any]:
        """LLMDataDist(role, cluster_id).init(...) in the worker. listen=True picks a free port on
        127.0.0.1; a str is used as is ("ip:port"). transport="tcp" sets llmdd.Transport;
        secret sets llmdd.LinkSecret. kwargs: pool_bytes, host_pool, device_pool, page_shift,
        sync_kv_timeout, device_backend."""
        opts = dict(options or {})
        if transport is not None and transport != "shm":
            opts["llmdd.Transport"] = transport
        if secret is not None:
            opts["llmdd.LinkSecret"] = secret
        if listen is True:
            listen = f"{LOOPBACK}:{free_port()}"
        result = self.call("init", deadline, role=role, cluster_id=cluster_id, listen=listen or None,
                           options=opts, **kwargs)
        self.cluster_id = cluster_id
        self.listen = listen or None
        self.listen_port = int(listen.rpartition(":")[2]) if listen else None
        self.init_result = result
        return result

    def allocate(self, desc_: Dict[str, Any], keys: Sequence[Dict[str, Any]] = (), blocks: bool = False,
                 blocks_key: Optional[Dict[str, Any]] = None) -> CacheRef:
        info = self.call("allocate", desc=desc_, keys=list(keys), blocks=blocks, blocks_key=blocks_key)
        return self._ref(info)

    def allocate_blocks(self, desc_: Dict[str, Any], key: Optional[Dict[str, Any]] = None) -> CacheRef:
        return self.allocate(desc_, blocks=True, blocks_key=key)

    def register(self, desc_: Dict[str, Any], keys: Sequence[Dict[str, Any]] = (), blocks: bool = False,
                 blocks_key: Optional[Dict[str, Any]] = None, remote_accessible: Optional[bool] = None) -> CacheRef:
        info = self.call("register", desc=desc_, keys=list(keys), blocks=blocks, blocks_key=blocks_key,
                         remote_accessible=remote_accessible)
        return self._ref(info)

    def _ref(self, info: Dict[str, Any]) -> CacheRef:
        return CacheRef(worker=self.name, cache_id=info["cache_id"], num_tensors=info["num_tensors"],
                        shape=info["shape"], dtype=info["dtype"], placement=info["placement"],
                        tensor_bytes=info["tensor_bytes"], addrs=info["addrs"], registered=info["registered"],
                        blocks=info["blocks"])

    def fill(self, cache: CacheRef, seed: int) -> None:
        self.call("fill", cache=cache.cache_id, seed=seed)

    def verify(self, cache: CacheRef, seed: Optional[int], copies: Sequence[Sequence[int]] = (),
               what: str = "", ignore: Sequence[Sequence[int]] = ()) -> int:
        """Asserts every byte of `cache`: pattern(seed) outside `copies`, the sources inside
        (seed None: only the bytes in `copies`), skipping `ignore` ([tensor, offset, length]).
        Returns the number of bytes checked."""
        out = self.call("verify", 60.0, cache=cache.cache_id, seed=seed, copies=[list(c) for c in copies],
                        ignore=[list(x) for x in ignore])
        bad = out["mismatches"]
        assert not bad, (f"{self.name}: cache {cache.cache_id} {what}: {len(bad)} tensor(s) differ "
                         f"(bad_in_copied = wrong data moved, bad_outside_copied = bytes outside the "
                         f"destination range were touched): {bad[:4]}")
        return out["bytes_checked"]

    def checksum(self, cache: CacheRef) -> List[str]:
        return self.call("checksum", cache=cache.cache_id)

    def link(self, clusters: Sequence[Dict[str, Any]], timeout: Optional[int] = None,
             deadline: float = DEFAULT_TIMEOUT) -> Dict[str, Any]:
        """link_clusters; returns {"overall": name, "per_cluster": [names], "elapsed_s": s}.
        Raised errors (PARAM_INVALID for [] ...) come back as RemoteError."""
        reply = self.request("link", deadline, clusters=list(clusters), timeout=timeout)
        if not reply.ok:
            raise RemoteError(self, "link", reply.error or {}, reply)
        return dict(reply.result, elapsed_s=reply.elapsed_s)

    def unlink(self, clusters: Sequence[Dict[str, Any]], timeout: Optional[int] = None,
               force: Optional[bool] = None, deadline: float = DEFAULT_TIMEOUT) -> Dict[str, Any]:
        reply = self.request("unlink", deadline, clusters=list(clusters), timeout=timeout, force=force)
        if not reply.ok:
            raise RemoteError(self, "unlink", reply.error or {}, reply)
        return dict(reply.result, elapsed_s=reply.elapsed_s)

    def link_to(self, *peers: "Worker", timeout: Optional[int] = None) -> Dict[str, Any]:
        """Links to the peers (one call) and asserts every cluster succeeded."""
        ret = self.link([cluster_of(p) for p in peers], timeout)
        if ret["per_cluster"] != ["LLM_SUCCESS"] * len(peers) or ret["overall"] != "LLM_SUCCESS":
            raise AssertionError(self._diagnose(f"link to {[p.name for p in peers]} returned {ret}") + "".join(
                f"\n---- stderr of {p.name} (tail) ----\n{p.stderr_text(3000)}" for p in peers))
        return ret

    def link_info(self, cluster_id: int) -> Dict[str, Any]:
        return self.call("link_info", cluster_id=cluster_id)

    def _transfer(self, op: str, key: Dict[str, Any], cache: CacheRef, deadline: float, kw: Dict[str, Any]) -> Reply:
        args = {k: (list(v) if isinstance(v, range) else v) for k, v in kw.items() if v is not None}
        for name in ("src_layer_range", "dst_layer_range"):
            if isinstance(kw.get(name), range):
                r = kw[name]
                args[name] = [r.start, r.stop] if r.step == 1 else [r.start, r.stop, r.step]
        return self.request(op, deadline, key=key, cache=cache.cache_id, **args)

    def pull_cache(self, key: Dict[str, Any], cache: CacheRef, deadline: float = DEFAULT_TIMEOUT, **kw: Any) -> Reply:
        """Returns the Reply (check .ok / .code); kwargs: batch_index, size, src_layer_range,
        dst_layer_range (range), tensor_num_per_layer, repeat, duration_s."""
        return self._transfer("pull_cache", key, cache, deadline, kw)

    def pull_blocks(self, key: Dict[str, Any], cache: CacheRef, src_blocks: Sequence[int] = (),
                    dst_blocks: Sequence[int] = (), deadline: float = DEFAULT_TIMEOUT, **kw: Any) -> Reply:
        return self._transfer("pull_blocks", key, cache, deadline,
                              dict(kw, src_blocks=list(src_blocks), dst_blocks=list(dst_blocks)))

    def push_cache(self, key: Dict[str, Any], cache: CacheRef, deadline: float = DEFAULT_TIMEOUT, **kw: Any) -> Reply:
        return self._transfer("push_cache", key, cache, deadline, kw)

    def push_blocks(self, key: Dict[str, Any], cache: CacheRef, src_blocks: Sequence[int] = (),
                    dst_blocks: Sequence[int] = (), deadline: float = DEFAULT_TIMEOUT, **kw: Any) -> Reply:
        return self._transfer("push_blocks", key, cache, deadline,
                              dict(kw, src_blocks=list(src_blocks), dst_blocks=list(dst_blocks)))

    def ok(self, reply: Reply) -> Reply:
        """Asserts a Reply succeeded, with the error and the worker's stderr otherwise."""
        assert reply.ok, self._diagnose(f"{reply.op} failed: {reply.error}")
        return reply

    def parallel(self, requests: Sequence[Dict[str, Any]], deadline: float = DEFAULT_TIMEOUT) -> List[Reply]:
        """Runs sub-requests ({"op": ..., args, "delay_s": s}) in threads inside the worker."""
        return [Reply.from_raw(r) for r in self.call("parallel", deadline, requests=list(requests))]

    def exec(self, code: str, deadline: float = DEFAULT_TIMEOUT) -> Any:
        return self.call("exec", deadline, code=code)

    def reset(self) -> Dict[str, Any]:
        return self.call("reset")

    # -- /proc -----------------------------------------------------------------------------
    def proc_stats(self) -> Dict[str, int]:
        """Open fds, mapping lines and threads of the worker, read from /proc by the test."""
        return proc_stats(self.pid)


def proc_stats(pid: int) -> Dict[str, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for _ in f)
    threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
    return {"fds": fds, "maps": maps, "threads": threads}


def _proc_state(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _wait_for(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


wait_for = _wait_for


def _short(args: Dict[str, Any], limit: int = 300) -> str:
    text = json.dumps(args, default=repr)
    return text if len(text) <= limit else text[:limit] + "..."


def kill_all_workers() -> None:
    """Last resort (session teardown): SIGKILL every worker still alive."""
    with _live_lock:
        workers = list(_live_workers)
    for w in workers:
        w.close()


class WorkerGroup:
    """Starts workers in parallel and closes them all at the end (context manager)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.workers: List[Worker] = []

    def start(self, name: str, env: Optional[Dict[str, str]] = None, wrap: Sequence[str] = (),
              unset_env: Iterable[str] = ()) -> Worker:
        w = Worker(self.prefix + name, env=env, wrap=wrap, unset_env=unset_env)
        self.workers.append(w)
        return w.start()

    def spawn(self, name: str, env: Optional[Dict[str, str]] = None, **init: Any) -> Worker:
        """Start + ready + init (see Worker.init for the keywords)."""
        w = self.start(name, env).wait_ready()
        w.init(**init)
        return w

    def spawn_many(self, specs: Sequence[Tuple[str, Dict[str, Any]]], env: Optional[Dict[str, str]] = None) -> List[Worker]:
        """Starts every process first (in parallel), then initializes them: [(name, init kwargs)]."""
        started = [self.start(name, env) for name, _ in specs]
        for w in started:
            w.wait_ready()
        rids = []
        for w, (_, init) in zip(started, specs):
            init = dict(init)
            listen = init.pop("listen", None)
            if listen is True:
                listen = f"{LOOPBACK}:{free_port()}"
            transport = init.pop("transport", None)
            secret = init.pop("secret", None)
            opts = dict(init.pop("options", None) or {})
            if transport is not None and transport != "shm":
                opts["llmdd.Transport"] = transport
            if secret is not None:
                opts["llmdd.LinkSecret"] = secret
            w.cluster_id = init.get("cluster_id", 1)
            w.listen = listen
            w.listen_port = int(listen.rpartition(":")[2]) if listen else None
            rids.append(w.send("init", listen=listen, options=opts, **init))
        for w, rid in zip(started, rids):
            reply = w.wait(rid, READY_TIMEOUT)
            if not reply.ok:
                raise RemoteError(w, "init", reply.error or {}, reply)
            w.init_result = reply.result
        return started

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers.clear()

    def __enter__(self) -> "WorkerGroup":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- mock peers (plain Python sockets) ---------------------------------------------------------

class FakePeer:
    """A TCP listener on 127.0.0.1 that misbehaves on purpose:
    mode "mute": accepts and never answers; "garbage": answers every connection with bytes that
    are no protocol and closes; "record": reads and records what the client sends, never answers."""

    def __init__(self, mode: str = "mute", garbage: bytes = b"") -> None:
        self.mode = mode
        self.garbage = garbage or (b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(range(256)) * 16)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: List[socket.socket] = []
        self.received = bytearray()
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            if self.mode == "garbage":
                with contextlib.suppress(OSError):
                    conn.sendall(self.garbage)
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
            elif self.mode == "record":
                threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self.received.extend(data)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> "FakePeer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RecordingProxy:
    """A TCP proxy 127.0.0.1:port -> target that records both directions (to check, e.g., that
    a link secret never crosses the wire)."""

    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.upstream = bytearray()    # client -> target
        self.downstream = bytearray()  # target -> client
        self.connections = 0
        self._socks: List[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, self.upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.downstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            record.extend(data)
            try:
                dst.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> "RecordingProxy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- expected bytes: which destination bytes come from which source bytes ---------------------
# A segment is [dst_tensor, dst_offset, src_seed, src_tensor, src_tensor_bytes, src_offset, length].

def layer_tensors(layer_range: Optional[range], tensor_num_per_layer: int, num_tensors: int) -> List[int]:
    """Tensor indices a layer range selects: [start*N, stop*N), the cache's shorter last group
    counting as a layer; None: every tensor."""
    if layer_range is None:
        return list(range(num_tensors))
    n = tensor_num_per_layer
    return list(range(layer_range.start * n, min(layer_range.stop * n, num_tensors)))


def _tensor_pairs(src: CacheRef, dst: CacheRef, src_layer_range: Optional[range],
                  dst_layer_range: Optional[range], tensor_num_per_layer: int) -> List[Tuple[int, int]]:
    s = layer_tensors(src_layer_range, tensor_num_per_layer, src.num_tensors)
    d = layer_tensors(dst_layer_range, tensor_num_per_layer, dst.num_tensors)
    assert len(s) == len(d), "test bug: layer ranges of different lengths"
    return list(zip(s, d))


def slot_copies(src: CacheRef, src_seed: int, src_slot: int, dst: CacheRef, dst_slot: int, size: int = -1,
                src_layer_range: Optional[range] = None, dst_layer_range: Optional[range] = None,
                tensor_num_per_layer: int = 2) -> List[List[int]]:
    """pull_cache / push_cache: `size` bytes (-1: one slot) of src slot -> dst slot, per tensor."""
    length = src.slot_bytes if size == -1 else size
    return [[d, dst_slot * dst.slot_bytes, src_seed, s, src.tensor_bytes, src_slot * src.slot_bytes, length]
            for s, d in _tensor_pairs(src, dst, src_layer_range, dst_layer_range, tensor_num_per_layer)]


def block_copies(src: CacheRef, src_seed: int, src_blocks: Sequence[int], dst: CacheRef, dst_blocks: Sequence[int],
                 src_layer_range: Optional[range] = None, dst_layer_range: Optional[range] = None,
                 tensor_num_per_layer: int = 2) -> List[List[int]]:
    """pull_blocks / push_blocks by BlocksCacheKey: src block i -> dst block i, per tensor."""
    out = []
    for s, d in _tensor_pairs(src, dst, src_layer_range, dst_layer_range, tensor_num_per_layer):
        for sb, db in zip(src_blocks, dst_blocks):
            out.append([d, db * dst.block_bytes, src_seed, s, src.tensor_bytes, sb * src.block_bytes, dst.block_bytes])
    return out


def slot_to_block_copies(src: CacheRef, src_seed: int, src_slot: int, dst: CacheRef, dst_blocks: Sequence[int],
                         src_layer_range: Optional[range] = None, dst_layer_range: Optional[range] = None,
                         tensor_num_per_layer: int = 2) -> List[List[int]]:
    """pull_blocks from a remote contiguous cache: chunk i (local block size) of the src slot ->
    dst block dst_blocks[i]; the last chunk may be shorter than a block."""
    out = []
    bb = dst.block_bytes
    base = src_slot * src.slot_bytes
    for s, d in _tensor_pairs(src, dst, src_layer_range, dst_layer_range, tensor_num_per_layer):
        for i, db in enumerate(dst_blocks):
            length = min(bb, src.slot_bytes - i * bb)
            if length <= 0:
                break
            out.append([d, db * bb, src_seed, s, src.tensor_bytes, base + i * bb, length])
    return out


def combine(*segment_lists: Iterable[List[int]]) -> List[List[int]]:
    """Segments of several transfers into one destination, later ones winning where they overlap
    (the worker applies segments in order)."""
    out: List[List[int]] = []
    for segs in segment_lists:
        out.extend(segs)
    return out


# ---- link state helpers -------------------------------------------------------------------------

def has_link(worker: Worker, cluster_id: int) -> bool:
    """True when `worker` has a link (active or broken) to `cluster_id`. Assumes link_info of an
    unknown cluster raises LLMException LLM_NOT_YET_LINK (the one place that assumption lives)."""
    reply = worker.request("link_info", cluster_id=cluster_id)
    if reply.ok:
        return True
    if reply.code == "LLM_NOT_YET_LINK":
        return False
    raise RemoteError(worker, "link_info", reply.error or {}, reply)


def link_state(worker: Worker, cluster_id: int) -> Optional[str]:
    """"active" / "broken", or None when there is no link."""
    reply = worker.request("link_info", cluster_id=cluster_id)
    if reply.ok:
        return reply.result.get("state")
    if reply.code == "LLM_NOT_YET_LINK":
        return None
    raise RemoteError(worker, "link_info", reply.error or {}, reply)


def wait_link_state(worker: Worker, cluster_id: int, state: Optional[str], timeout: float = 3.0) -> float:
    """Polls until link_state(...) == state; returns the seconds it took; fails the test at the
    deadline naming the last state seen."""
    t0 = time.monotonic()
    seen: List[Optional[str]] = []

    def check() -> bool:
        seen.append(link_state(worker, cluster_id))
        return seen[-1] == state
    if not _wait_for(check, timeout, interval=0.02):
        raise AssertionError(f"{worker.name}: link to cluster {cluster_id} still {seen[-1]!r} after "
                             f"{timeout} s, expected {state!r}")
    return time.monotonic() - t0


# ---- a prefill / decode pair ---------------------------------------------------------------------

PREFILL_ID = 1
DECODE_ID = 2


@dataclass
class Pair:
    prefill: Worker
    decode: Worker
    transport: str


def start_pair(group: WorkerGroup, transport: str = "shm", link: bool = True,
               prefill_init: Optional[Dict[str, Any]] = None, decode_init: Optional[Dict[str, Any]] = None,
               prefill_env: Optional[Dict[str, str]] = None, decode_env: Optional[Dict[str, str]] = None) -> Pair:
    """Prefill (PROMPT, cluster 1, listening) and decode (DECODER, cluster 2), started in
    parallel, the decode linked to the prefill (link=True)."""
    p_init: Dict[str, Any] = dict(role="PROMPT", cluster_id=PREFILL_ID, listen=True, transport=transport)
    p_init.update(prefill_init or {})
    d_init: Dict[str, Any] = dict(role="DECODER", cluster_id=DECODE_ID, transport=transport)
    d_init.update(decode_init or {})
    if prefill_env or decode_env:
        prefill = group.spawn("prefill", env=prefill_env, **p_init)
        decode = group.spawn("decode", env=decode_env, **d_init)
    else:
        prefill, decode = group.spawn_many([("prefill", p_init), ("decode", d_init)])
    if link:
        decode.link_to(prefill)
    return Pair(prefill, decode, transport)


def expect_code(reply: Reply, code: str, match: Optional[str] = None, what: str = "") -> Reply:
    """Asserts that a Reply failed with LLMException `code` (LLMStatusCode name; or an exception
    type name such as "ValueError"), its message matching `match` (re.search)."""
    label = f"{reply.op}{' (' + what + ')' if what else ''}"
    assert not reply.ok, f"{label} succeeded, expected {code}"
    got = reply.code or (reply.error or {}).get("type")
    assert got == code, f"{label} raised {got}, expected {code}: {reply.message}"
    if match is not None:
        assert re.search(match, reply.message), f"{label}: message does not match {match!r}: {reply.message!r}"
    return reply
