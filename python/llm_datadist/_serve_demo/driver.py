# SPDX-License-Identifier: Apache-2.0
"""The serve demo's driver: starts P prefill and D decode worker processes, hands every decode
the prefills' handshake payloads, routes requests (xPyD) and keeps a health state per prefill.

    with Cluster(num_prefill=2, num_decode=2) as c:
        results = c.run(prompts, max_new_tokens=8)

Routing: a request goes to the routable prefill (ACTIVE or RECOVERING) with the fewest requests
in flight (round robin on ties); a prefill that exits or does not answer within
``prefill_timeout_s`` is a failure for its health and the request goes to the next one; with no
prefill left, the decode computes the prompt itself. Then the decode with the fewest in flight
pulls the blocks (connector, retry on retryable codes only) and generates; a failed pull is
reported as block ids and recomputed there. The decode's outcome feeds the prefill's health; a
prober thread relinks RELINKING/HALTED prefills (every decode relinks) once they answer again.
Error lines are JSON (LLMException.to_dict() plus the request id) in ``log_dir``.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..integrations.health import HealthPolicy, HealthRegistry, PeerState

__all__ = ["Cluster", "RequestResult", "WorkerGone", "WorkerTimeout"]

_log = logging.getLogger("llm_datadist.serve_demo")
PREFILL_BASE, DECODE_BASE = 101, 201


class WorkerGone(RuntimeError):
    pass


class WorkerTimeout(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerHandle:
    """One worker process (own session, so the whole group can be killed) and its pipe."""

    def __init__(self, name: str, conf: Dict[str, Any], env: Optional[Dict[str, str]], log_path: str,
                 on_exit: Optional[Callable[["WorkerHandle"], None]] = None) -> None:
        self.name, self.conf, self.log_path = name, conf, log_path
        self.cluster_id = conf["cluster_id"]
        self._on_exit = on_exit
        self._ids = itertools.count(1)
        self._waiting: Dict[int, Dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._eof = False
        self.closing = False
        self.inflight = 0
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("LLMDD_LOG_FORMAT", "json")
        full_env.setdefault("LLMDD_LOG_LEVEL", "warning")
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "llm_datadist._serve_demo.worker", json.dumps(conf)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=full_env, start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, name=f"reader-{name}", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                self._waiting[msg.get("id")] = msg
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        if self._on_exit is not None and not self.closing:
            self._on_exit(self)

    @property
    def alive(self) -> bool:
        return not self._eof and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> Dict[str, Any]:
        return self._wait(0, timeout, "start")

    def _wait(self, mid: int, timeout: float, op: str) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._waiting:
                if self._eof:
                    raise WorkerGone(f"{self.name} (pid {self.pid}) exited during {op} (code {self.proc.poll()})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerTimeout(f"{self.name} (pid {self.pid}) did not answer {op} within {timeout:g} s")
                self._cond.wait(left)
            return self._waiting.pop(mid)

    def send(self, op: str, **kw: Any) -> int:
        mid = next(self._ids)
        data = (json.dumps({"op": op, "id": mid, **kw}) + "\n").encode()
        try:
            with self._write_lock:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise WorkerGone(f"{self.name} (pid {self.pid}): {exc}") from exc
        return mid

    def call(self, op: str, timeout: float, **kw: Any) -> Dict[str, Any]:
        with self._cond:
            self.inflight += 1
        try:
            return self._wait(self.send(op, **kw), timeout, op)
        finally:
            with self._cond:
                self.inflight -= 1

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self, timeout: float = 5.0) -> None:
        self.closing = True
        if self.proc.poll() is None:
            self.kill(signal.SIGCONT)
            try:
                self.send("quit")
                self.proc.wait(timeout)
            except (WorkerGone, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.kill(signal.SIGKILL)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


@dataclass
class RequestResult:
    request_id: str
    prompt_len: int
    tokens: List[int] = field(default_factory=list)
    prefill_worker: Optional[int] = None       # cluster id, None when recomputed on the decode
    decode_worker: Optional[int] = None
    prefill_ms: float = 0.0
    transfer_ms: float = 0.0
    recompute_ms: float = 0.0
    first_decode_ms: float = 0.0
    decode_ms: float = 0.0
    ttft_ms: float = 0.0
    e2e_ms: float = 0.0
    kv_source: str = ""
    kv_digest_prefill: Optional[str] = None
    kv_digest_decode: Optional[str] = None
    load_error_blocks: List[int] = field(default_factory=list)
    failed_prefills: List[Dict[str, Any]] = field(default_factory=list)
    transfer: Optional[Dict[str, Any]] = None

    @property
    def kv_equal(self) -> Optional[bool]:
        if self.kv_digest_prefill is None or self.kv_digest_decode is None:
            return None
        return self.kv_digest_prefill == self.kv_digest_decode


class Cluster:
    def __init__(self, num_prefill: int = 2, num_decode: int = 2, model: Optional[Dict[str, Any]] = None,
                 device: str = "cpu", num_blocks: int = 256, sync_kv_timeout_ms: int = 1000,
                 link_timeout_ms: int = 1000, prefill_timeout_s: float = 5.0, decode_timeout_s: float = 60.0,
                 free_timeout_s: float = 10.0, log_dir: Optional[str] = None,
                 decode_env: Optional[Dict[str, str]] = None, prefill_env: Optional[Dict[str, str]] = None,
                 stage_device: bool = False, health_policy: Optional[HealthPolicy] = None,
                 ready_timeout_s: float = 90.0) -> None:
        from .model import ModelConfig
        self.model = dict(model or ModelConfig().to_dict())
        self.num_prefill, self.num_decode = num_prefill, num_decode
        self.device = device
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="llmdd-serve-demo-")
        os.makedirs(self.log_dir, exist_ok=True)
        self.common = {"model": self.model, "device": device, "num_blocks": num_blocks, "host": "127.0.0.1",
                       "sync_kv_timeout_ms": sync_kv_timeout_ms, "link_timeout_ms": link_timeout_ms,
                       "free_timeout_s": free_timeout_s, "pool_bytes": max(64 << 20, 2 * num_blocks * (
                           2 * self.model["num_layers"] * self.model["block_size"] * self.model["num_kv_heads"]
                           * self.model["head_dim"] * 4))}
        self.prefill_timeout_s, self.decode_timeout_s = prefill_timeout_s, decode_timeout_s
        self.link_timeout_ms = link_timeout_ms
        self.decode_env, self.prefill_env, self.stage_device = decode_env, prefill_env, stage_device
        self.ready_timeout_s = ready_timeout_s
        self.health = HealthRegistry(health_policy or HealthPolicy())
        self.prefills: Dict[int, WorkerHandle] = {}
        self.decodes: Dict[int, WorkerHandle] = {}
        self.handshakes: Dict[int, Dict[str, Any]] = {}
        self.transports: Dict[str, str] = {}
        self._rr = itertools.count()
        self._route_lock = threading.Lock()
        self._stop = threading.Event()
        self._prober: Optional[threading.Thread] = None
        self._file_log: Optional[logging.Handler] = None

    # -- lifecycle ----------------------------------------------------------------------------
    def _prefill_conf(self, i: int, port: int) -> Dict[str, Any]:
        return {**self.common, "role": "prefill", "name": f"prefill{i}", "cluster_id": PREFILL_BASE + i,
                "port": port}

    def _spawn_prefill(self, conf: Dict[str, Any]) -> WorkerHandle:
        return WorkerHandle(conf["name"], conf, self.prefill_env, os.path.join(self.log_dir, conf["name"] + ".log"),
                            on_exit=self._prefill_exited)

    def start(self) -> "Cluster":
        from ..integrations.health import _log as health_log
        from .._logging import JsonLineFormatter
        self._file_log = logging.FileHandler(os.path.join(self.log_dir, "driver.log"))
        self._file_log.setFormatter(JsonLineFormatter())
        for lg in (_log, health_log):
            lg.addHandler(self._file_log)
            lg.setLevel(min(lg.level or logging.INFO, logging.INFO))
        try:
            for i in range(self.num_prefill):
                conf = self._prefill_conf(i, _free_port())
                self.prefills[conf["cluster_id"]] = self._spawn_prefill(conf)
            for j in range(self.num_decode):
                conf = {**self.common, "role": "decode", "name": f"decode{j}", "cluster_id": DECODE_BASE + j,
                        "stage_device": self.stage_device}
                self.decodes[conf["cluster_id"]] = WorkerHandle(conf["name"], conf, self.decode_env,
                                                                os.path.join(self.log_dir, conf["name"] + ".log"))
            for w in [*self.prefills.values(), *self.decodes.values()]:
                hello = self._ready(w)
                if w.conf["role"] == "prefill":
                    self.handshakes[w.cluster_id] = hello["handshake"]
            for d in self.decodes.values():
                for cid, payload in self.handshakes.items():
                    rep = d.call("add_peer", timeout=self.link_timeout_ms / 1e3 + 10, payload=payload)
                    if not rep["ok"]:
                        raise RuntimeError(f"{d.name} could not add prefill {cid}: {rep['error']}")
                    self.transports[f"{d.name}->prefill{cid - PREFILL_BASE}"] = rep["transport"]
        except BaseException:
            self.close()
            raise
        self._prober = threading.Thread(target=self._probe_loop, name="health-prober", daemon=True)
        self._prober.start()
        return self

    def _ready(self, w: WorkerHandle) -> Dict[str, Any]:
        try:
            hello = w.wait_ready(self.ready_timeout_s)
        except (WorkerGone, WorkerTimeout) as exc:
            raise RuntimeError(f"{exc}; its log: {w.log_path}:\n{self._tail(w.log_path)}") from exc
        if not hello.get("ok"):
            raise RuntimeError(f"{w.name} failed to start: {hello.get('error')}")
        return hello

    @staticmethod
    def _tail(path: str, n: int = 4000) -> str:
        try:
            with open(path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        self._stop.set()
        if self._prober is not None:
            self._prober.join(5)
        for w in [*self.decodes.values(), *self.prefills.values()]:
            w.close()
        if self._file_log is not None:
            from ..integrations.health import _log as health_log
            for lg in (_log, health_log):
                lg.removeHandler(self._file_log)
            self._file_log.close()
            self._file_log = None

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- faults and recovery -----------------------------------------------------------------
    def prefill_by_index(self, i: int) -> WorkerHandle:
        return self.prefills[PREFILL_BASE + i]

    def restart_prefill(self, i: int) -> WorkerHandle:
        """Kills prefill i if it runs and starts it again on the same cluster id and port."""
        old = self.prefill_by_index(i)
        old.close(timeout=1.0)
        new = self._spawn_prefill(old.conf)
        self._ready(new)
        self.prefills[old.cluster_id] = new
        return new

    def state(self, cluster_id: int) -> PeerState:
        return self.health.peer(cluster_id).state

    def _prefill_exited(self, w: WorkerHandle) -> None:
        err = self._exc("LLM_LINK_FAILED", f"{w.name} (cluster {w.cluster_id}, pid {w.pid}) exited", w.cluster_id,
                        "prefill", action="relink", recoverable=True)
        self._log_error(err, None)
        self.health.peer(w.cluster_id).record_failure(err["code"], err["action"], err)

    def _probe_loop(self) -> None:
        while not self._stop.wait(0.05):
            for cid in list(self.prefills):
                h = self.health.peer(cid)
                if h.wants_relink():
                    ok, why = self._relink(cid)
                    if ok:
                        h.relink_succeeded()
                    else:
                        h.relink_failed(why)

    def _relink(self, cid: int) -> tuple:
        w = self.prefills[cid]
        if not w.alive:
            return False, f"{w.name} is not running"
        try:
            if not w.call("ping", timeout=self.link_timeout_ms / 1e3).get("ok"):
                return False, f"{w.name} did not answer ping"
        except (WorkerGone, WorkerTimeout) as exc:
            return False, str(exc)
        for d in self.decodes.values():
            try:
                if not d.call("relink", timeout=self.link_timeout_ms / 1e3 + 10, cluster_id=cid).get("ok"):
                    return False, f"{d.name} could not relink"
            except (WorkerGone, WorkerTimeout) as exc:
                return False, str(exc)
        return True, ""

    # -- errors ------------------------------------------------------------------------------
    @staticmethod
    def _exc(code: str, message: str, cluster_id: int, operation: str, **context: Any) -> Dict[str, Any]:
        from ..status import LLMException, LLMStatusCode
        return LLMException(message, status_code=getattr(LLMStatusCode, code),
                            context={"operation": operation, "remote_cluster_id": cluster_id, **context}).to_dict()

    @staticmethod
    def _log_error(err: Dict[str, Any], request_id: Optional[str]) -> None:
        line = {"event": "error", "request_id": request_id, "error": err}
        _log.error("%s", json.dumps(line), extra={"request_id": request_id, "error": err,
                                                  "operation": err.get("stage")})

    # -- serving -----------------------------------------------------------------------------
    def _pick(self, workers: Dict[int, WorkerHandle], exclude: List[int], use_health: bool) -> Optional[WorkerHandle]:
        with self._route_lock:
            cands = [w for cid, w in workers.items() if cid not in exclude and w.alive
                     and (not use_health or self.health.peer(cid).routable)]
            if not cands:
                return None
            low = min(w.inflight for w in cands)
            cands = [w for w in cands if w.inflight == low]
            w = cands[next(self._rr) % len(cands)]
            w.inflight += 1           # reserved until its call starts (call() counts it again)
            return w

    def _release(self, w: WorkerHandle) -> None:
        with self._route_lock:
            w.inflight -= 1

    def serve_one(self, rid: str, prompt: List[int], max_new_tokens: int,
                  on_prefilled: Optional[Callable[[str, WorkerHandle], None]] = None,
                  inject_fault: Optional[Dict[str, Any]] = None) -> RequestResult:
        t_submit = time.monotonic()
        res = RequestResult(rid, len(prompt))
        pre: Optional[Dict[str, Any]] = None
        pw: Optional[WorkerHandle] = None
        tried: List[int] = []
        while pre is None:
            w = self._pick(self.prefills, tried, use_health=True)
            if w is None:
                break
            tried.append(w.cluster_id)
            try:
                rep = w.call("prefill", timeout=self.prefill_timeout_s, request_id=rid, prompt=prompt)
            except WorkerGone as exc:
                rep = {"ok": False, "error": self._exc("LLM_LINK_FAILED", str(exc), w.cluster_id, "prefill",
                                                       action="relink", recoverable=True)}
            except WorkerTimeout as exc:
                rep = {"ok": False, "error": self._exc("LLM_TIMEOUT", str(exc), w.cluster_id, "prefill")}
            finally:
                self._release(w)
            if rep.get("ok"):
                pre, pw = rep, w
            else:
                err = rep["error"]
                self._log_error(err, rid)
                res.failed_prefills.append({"cluster_id": w.cluster_id, "code": err.get("code")})
                self.health.peer(w.cluster_id).record_failure(err.get("code"), err.get("action"), err)
        if pre is not None:
            res.prefill_worker, res.prefill_ms = pw.cluster_id, pre["prefill_ms"]
            res.kv_digest_prefill = pre["kv_digest"]
            if on_prefilled is not None:
                on_prefilled(rid, pw)
        d = self._pick(self.decodes, [], use_health=False)
        if d is None:
            raise RuntimeError("no decode worker is running")
        try:
            rep = d.call("decode", timeout=self.decode_timeout_s, request_id=rid, prompt=prompt,
                         max_new_tokens=max_new_tokens, first_token=pre["first_token"] if pre else None,
                         kv_transfer_params=pre["kv_transfer_params"] if pre else None, inject_fault=inject_fault)
        finally:
            self._release(d)
        if not rep.get("ok"):
            raise RuntimeError(f"{d.name} failed request {rid}: {rep.get('error')}")
        tr = rep.get("transfer")
        if tr is not None:
            h = self.health.peer(tr["peer"])
            if tr["ok"]:
                h.record_success()
            else:
                self._log_error(tr["error"], rid)
                h.record_failure(tr["error"].get("code"), tr["error"].get("action"), tr["error"])
        res.decode_worker = d.cluster_id
        res.tokens = rep["tokens"]
        for k in ("transfer_ms", "recompute_ms", "first_decode_ms", "decode_ms", "kv_source", "load_error_blocks"):
            setattr(res, k, rep[k])
        res.kv_digest_decode, res.transfer = rep["kv_digest"], tr
        res.ttft_ms = (rep["t_first_token"] - t_submit) * 1e3
        res.e2e_ms = (time.monotonic() - t_submit) * 1e3
        return res

    def run(self, prompts: List[List[int]], max_new_tokens: int = 8, concurrency: Optional[int] = None,
            on_prefilled: Optional[Callable[[str, WorkerHandle], None]] = None,
            inject_fault: Optional[Dict[str, Dict[str, Any]]] = None, prefix: str = "req") -> List[RequestResult]:
        conc = concurrency or (self.num_prefill + self.num_decode)
        with ThreadPoolExecutor(max_workers=conc, thread_name_prefix="request") as pool:
            futs = [pool.submit(self.serve_one, f"{prefix}-{i}", p, max_new_tokens, on_prefilled,
                                (inject_fault or {}).get(f"{prefix}-{i}")) for i, p in enumerate(prompts)]
            return [f.result() for f in futs]

    def wait_state(self, cluster_id: int, state: PeerState, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(cluster_id) is state:
                return True
            time.sleep(0.02)
        return self.state(cluster_id) is state


def result_rows(results: List[RequestResult]) -> List[Dict[str, Any]]:
    out = []
    for r in results:
        d = asdict(r)
        d["kv_equal"] = r.kv_equal
        out.append(d)
    return out
