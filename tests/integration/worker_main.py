# SPDX-License-Identifier: Apache-2.0
"""Entry point of an integration-test worker process: ``python -m worker_main``.

One LLMDataDist per process (upstream's rule), driven by the test process over a line-based JSON
protocol:

* requests arrive on stdin, one JSON object a line: ``{"id": 7, "op": "fill", "cache": 3, "seed": 5}``;
* replies leave on a private copy of the original stdout, one JSON object a line:
  ``{"id": 7, "ok": true, "result": ..., "elapsed_s": ..., "t_start": ..., "t_end": ...}`` or
  ``{"id": 7, "ok": false, "error": {... LLMException.to_dict() ..., "type": "LLMException"}, ...}``.
  ``t_start``/``t_end`` are ``time.monotonic()`` values (CLOCK_MONOTONIC is shared by every
  process of the machine, so the test process can compare them with its own clock).
* fd 1 is pointed at stderr, so nothing the library (or a C++ printf) writes can corrupt the
  protocol; stderr goes to a file the test prints when something fails.

A request with ``"thread": true`` runs in its own thread (the loop reads the next request at
once); ``"start_at"`` (a monotonic time) delays it until then, so several processes can start an
operation together. The worker exits when stdin closes or its parent dies.

Byte patterns: tensor ``t`` filled with seed ``s`` holds ``pattern(s, t, nbytes)``; nothing but
(seed, tensor index, tensor bytes) is needed to recompute any byte of it, so the side that
receives data verifies every byte without the data being shipped (see ``op_verify``).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

import numpy as np

# tests/, for config_helpers (the test process has it already; a worker run as a script does not)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

U64MAX = 2**64 - 1


# ---- patterns (also imported by the test process) ---------------------------------------------

def pattern(seed: int, tensor: int, nbytes: int) -> np.ndarray:
    """The bytes of tensor `tensor` of a cache filled with `seed`: deterministic in (seed,
    tensor, nbytes); every block / slot of the tensor is a slice of it."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(tensor), 0x11DD])
    return np.frombuffer(rng.bytes(int(nbytes)), dtype=np.uint8)


class _PatternCache:
    """Small LRU of generated patterns (a verify of many segments reuses the source tensors)."""

    def __init__(self, limit_bytes: int = 256 << 20) -> None:
        self._items: Dict[tuple, np.ndarray] = {}
        self._limit = limit_bytes
        self._lock = threading.Lock()

    def get(self, seed: int, tensor: int, nbytes: int) -> np.ndarray:
        key = (seed, tensor, nbytes)
        with self._lock:
            hit = self._items.pop(key, None)
            if hit is not None:
                self._items[key] = hit
                return hit
        value = pattern(seed, tensor, nbytes)
        with self._lock:
            self._items[key] = value
            total = sum(v.nbytes for v in self._items.values())
            while total > self._limit and len(self._items) > 1:
                old = next(iter(self._items))
                total -= self._items.pop(old).nbytes
        return value


_PATTERNS = _PatternCache()


# ---- protocol plumbing -------------------------------------------------------------------------

_out_lock = threading.Lock()
_out = None  # the protocol stream (a private dup of the original stdout)


def _emit(obj: Dict[str, Any]) -> None:
    line = json.dumps(obj, default=_json_default) + "\n"
    with _out_lock:
        _out.write(line)
        _out.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "name") and hasattr(value, "value"):  # enums
        return value.name
    return repr(value)


def _error_dict(exc: BaseException) -> Dict[str, Any]:
    import llm_datadist as ld
    if isinstance(exc, ld.LLMException):
        err = exc.to_dict()
        err["type"] = "LLMException"
        err["repr"] = repr(exc)
        return err
    return {"type": type(exc).__name__, "code": None, "status_code": None, "message": str(exc),
            "repr": repr(exc), "traceback": traceback.format_exc()}


def _watch_parent() -> None:
    """Exit when the test process goes away (a test killed mid-way must not leave workers)."""
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


# ---- the worker state ---------------------------------------------------------------------------

class Worker:
    def __init__(self) -> None:
        import llm_datadist as ld
        self.ld = ld
        self.dd = None
        self.caches: Dict[int, Any] = {}          # cache_id -> Cache (kept after deallocate)
        self.keys: Dict[int, List[Any]] = {}      # cache_id -> CacheKeys bound at allocation
        self.buffers: Dict[int, List[np.ndarray]] = {}  # registered caches: our memory
        self.dead: set = set()                     # ids deallocated / unregistered
        self.lock = threading.Lock()

    # -- helpers ----------------------------------------------------------------------------
    @property
    def cm(self):
        if self.dd is None:
            raise RuntimeError("worker: init first")
        return self.dd.cache_manager

    def cache(self, cache_id: int):
        try:
            return self.caches[int(cache_id)]
        except KeyError:
            raise KeyError(f"worker: unknown cache id {cache_id}") from None

    def make_desc(self, spec: Dict[str, Any]):
        ld = self.ld
        return ld.CacheDesc(int(spec["num_tensors"]), list(spec["shape"]), ld.DataType[spec.get("dtype", "DT_FLOAT16")],
                            ld.Placement[spec.get("placement", "DEVICE")])

    def make_key(self, spec: Optional[Dict[str, Any]]):
        ld = self.ld
        if spec is None:
            return None
        kind = spec["kind"]
        if kind == "req":
            return ld.CacheKey(spec["cluster_id"], spec["req_id"], spec.get("model_id", 0))
        if kind == "prefix":
            return ld.CacheKey(spec["cluster_id"], U64MAX, spec.get("model_id", 0), spec["prefix_id"])
        if kind == "pad":
            return ld.CacheKey(spec["cluster_id"], U64MAX)
        if kind == "id_index":
            return ld.CacheKeyByIdAndIndex(spec["cluster_id"], spec["cache_id"], spec.get("batch_index", 0))
        if kind == "blocks":
            return ld.BlocksCacheKey(spec["cluster_id"], spec.get("model_id", 0))
        raise ValueError(f"worker: unknown key kind {kind!r}")

    def make_cluster(self, spec: Dict[str, Any]):
        info = self.ld.LLMClusterInfo()
        info.remote_cluster_id = spec["remote_cluster_id"]
        for ip, port in spec.get("remote", []):
            info.append_remote_ip_info(ip, port)
        for ip, port in spec.get("local", []):
            info.append_local_ip_info(ip, port)
        return info

    def tensor_bytes(self, cache) -> int:
        return cache.cache_desc.size

    def _is_cuda(self, cache) -> bool:
        return (cache.cache_desc.placement == self.ld.Placement.DEVICE and self.dd is not None
                and self.dd.device_backend == "cuda")

    def read_tensor(self, cache_id: int, t: int) -> np.ndarray:
        """A copy of tensor t's bytes (uint8, flat)."""
        cache = self.cache(cache_id)
        if int(cache_id) in self.buffers:
            buf = self.buffers[int(cache_id)][t]
            return buf.cpu().numpy().copy() if hasattr(buf, "cpu") else buf.copy()
        if self._is_cuda(cache):
            import torch
            view = cache.torch(t)
            return view.contiguous().view(torch.uint8).reshape(-1).cpu().numpy().copy()
        view = cache.numpy(t)
        data = np.ascontiguousarray(view).view(np.uint8).reshape(-1).copy()
        del view
        return data

    def write_tensor(self, cache_id: int, t: int, data: np.ndarray) -> None:
        cache = self.cache(cache_id)
        if int(cache_id) in self.buffers:
            buf = self.buffers[int(cache_id)][t]
            if hasattr(buf, "copy_"):  # a torch tensor on the CUDA device
                import torch
                buf.copy_(torch.from_numpy(data.copy()))
            else:
                buf[:] = data
            return
        if self._is_cuda(cache):
            import torch
            view = cache.torch(t)
            view.view(torch.uint8).reshape(-1).copy_(torch.from_numpy(data.copy()))
            return
        view = cache.numpy(t)
        view.view(np.uint8).reshape(-1)[:] = data
        del view

    # -- lifecycle --------------------------------------------------------------------------
    def op_init(self, role: str = "PROMPT", cluster_id: int = 1, listen: Optional[str] = None,
                pool_bytes: int = 64 << 20, host_pool: bool = True, device_pool: bool = True,
                page_shift: Optional[int] = None, sync_kv_timeout: Optional[int] = None,
                device_backend: Optional[str] = None, options: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        ld = self.ld
        if device_backend is None:
            # Placement.DEVICE is the CPU device unless the run asks for CUDA (GPU hosts)
            device_backend = os.environ.get("LLMDD_TEST_DEVICE_BACKEND", "cpu")
        from config_helpers import make_config
        cfg = make_config(device_backend, int(pool_bytes), None if page_shift is None else int(page_shift),
                          host_pool, device_pool)
        if sync_kv_timeout is not None:
            cfg.sync_kv_timeout = int(sync_kv_timeout)
        if listen:
            cfg.listen_ip_info = listen
        opts = dict(cfg.generate_options())
        opts.update(options or {})
        dd = ld.LLMDataDist(ld.LLMRole[role], int(cluster_id))
        dd.init(opts)
        self.dd = dd
        return {"pid": os.getpid(), "cluster_id": int(cluster_id), "role": role, "listen": listen,
                "device_backend": dd.device_backend, "options": opts}

    def op_finalize(self) -> None:
        if self.dd is not None:
            self.dd.finalize()
        self.dd = None
        self.caches.clear()
        self.keys.clear()
        self.dead.clear()

    def op_switch_role(self, role: str, options: Optional[Dict[str, str]] = None) -> None:
        self.dd.switch_role(self.ld.LLMRole[role], options)

    def op_ping(self) -> Dict[str, Any]:
        return {"pid": os.getpid()}

    def op_exit(self, code: int = 0) -> None:
        # replied to by the loop first (see _handle), then exits without atexit handlers
        return None

    def op_sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- caches -----------------------------------------------------------------------------
    def _cache_info(self, cache, registered: bool, blocks: bool) -> Dict[str, Any]:
        desc = cache.cache_desc
        return {"cache_id": cache.cache_id, "num_tensors": desc.num_tensors, "shape": list(desc.shape),
                "dtype": desc.data_type.name, "placement": desc.placement.name, "tensor_bytes": desc.size,
                "addrs": list(cache.tensor_addrs), "registered": registered, "blocks": blocks}

    def op_allocate(self, desc: Dict[str, Any], keys: Optional[List[Dict[str, Any]]] = None,
                    blocks: bool = False, blocks_key: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        d = self.make_desc(desc)
        if blocks:
            cache = self.cm.allocate_blocks_cache(d, self.make_key(blocks_key))
            bound = []
        else:
            bound = [self.make_key(k) for k in (keys or [])]
            cache = self.cm.allocate_cache(d, bound)
        with self.lock:
            self.caches[cache.cache_id] = cache
            self.keys[cache.cache_id] = bound
        return self._cache_info(cache, False, blocks)

    def op_register(self, desc: Dict[str, Any], keys: Optional[List[Dict[str, Any]]] = None,
                    blocks: bool = False, blocks_key: Optional[Dict[str, Any]] = None,
                    remote_accessible: Optional[bool] = None) -> Dict[str, Any]:
        """Registers memory this worker allocates itself: page-aligned numpy buffers, or torch
        CUDA tensors for Placement.DEVICE when the device backend is CUDA."""
        d = self.make_desc(desc)
        nbytes = d.size
        buffers, addrs = [], []
        cuda = d.placement == self.ld.Placement.DEVICE and self.dd is not None and self.dd.device_backend == "cuda"
        for _ in range(d.num_tensors):
            if cuda:
                import torch
                buf = torch.zeros(nbytes, dtype=torch.uint8, device=f"cuda:{torch.cuda.current_device()}")
                buffers.append(buf)
                addrs.append(buf.data_ptr())
                continue
            raw = np.zeros(nbytes + 4096, dtype=np.uint8)
            start = (-raw.ctypes.data) % 4096
            buf = raw[start:start + nbytes]
            buffers.append(buf)
            addrs.append(buf.ctypes.data)
        if blocks:
            cache = self.cm.register_blocks_cache(d, addrs, self.make_key(blocks_key), remote_accessible)
            bound = []
        else:
            bound = [self.make_key(k) for k in (keys or [])]
            cache = self.cm.register_cache(d, addrs, bound, remote_accessible)
        with self.lock:
            self.caches[cache.cache_id] = cache
            self.keys[cache.cache_id] = bound
            self.buffers[cache.cache_id] = buffers
        return self._cache_info(cache, True, blocks)

    def op_deallocate(self, cache: int) -> None:
        c = self.cache(cache)
        if c.is_blocks_cache:
            self.cm.deallocate_blocks_cache(c)
        else:
            self.cm.deallocate_cache(c)
        self.dead.add(int(cache))

    def op_unregister(self, cache: int) -> None:
        self.cm.unregister_cache(int(cache))
        self.dead.add(int(cache))

    def op_remove_key(self, key: Dict[str, Any]) -> None:
        self.cm.remove_cache_key(self.make_key(key))

    def op_pool_stats(self, placement: str = "DEVICE") -> Optional[Dict[str, int]]:
        stats = self.cm.pool_stats(self.ld.Placement[placement])
        return None if stats is None else dict(stats)

    def op_reset(self) -> Dict[str, Any]:
        """Frees everything this worker allocated or registered (keys removed first); returns the
        pool stats afterwards."""
        errors = []
        for cache_id, cache in list(self.caches.items()):
            try:
                if not cache.is_registered:
                    # also for deallocated caches: their keys may still hold the memory
                    for key in self.keys.get(cache_id, []):
                        if key.req_id != U64MAX or key.prefix_id != U64MAX:
                            self.cm.remove_cache_key(key)
                if cache_id in self.dead:
                    continue
                if cache.is_registered:
                    self.cm.unregister_cache(cache_id)
                else:
                    if cache.is_blocks_cache:
                        self.cm.deallocate_blocks_cache(cache)
                    else:
                        self.cm.deallocate_cache(cache)
            except Exception as exc:  # keep freeing the others
                errors.append(f"cache {cache_id}: {exc!r}")
        self.caches.clear()
        self.keys.clear()
        self.buffers.clear()
        self.dead.clear()
        stats = {p: self.op_pool_stats(p) for p in ("HOST", "DEVICE")}
        return {"errors": errors, "pools": stats}

    # -- bytes ------------------------------------------------------------------------------
    def op_fill(self, cache: int, seed: int, tensors: Optional[List[int]] = None) -> None:
        c = self.cache(cache)
        nbytes = self.tensor_bytes(c)
        for t in (tensors if tensors is not None else range(c.cache_desc.num_tensors)):
            self.write_tensor(cache, t, pattern(seed, t, nbytes))

    def op_checksum(self, cache: int, tensors: Optional[List[int]] = None,
                    region: Optional[List[int]] = None) -> List[str]:
        c = self.cache(cache)
        out = []
        for t in (tensors if tensors is not None else range(c.cache_desc.num_tensors)):
            data = self.read_tensor(cache, t)
            if region is not None:
                data = data[region[0]:region[0] + region[1]]
            out.append(hashlib.sha256(data.tobytes()).hexdigest())
        return out

    def op_peek(self, cache: int, tensor: int, offset: int = 0, length: int = 64) -> str:
        return self.read_tensor(cache, tensor)[offset:offset + length].tobytes().hex()

    def op_verify(self, cache: int, seed: Optional[int], copies: List[List[int]],
                  tensors: Optional[List[int]] = None, ignore: Optional[List[List[int]]] = None) -> Dict[str, Any]:
        """Checks every byte of the cache: tensor t must equal pattern(seed, t) (seed None: only
        the copied segments are checked), except the segments in `copies`:
        [dst_tensor, dst_offset, src_seed, src_tensor, src_tensor_bytes, src_offset, length],
        which must hold the source pattern's bytes. `ignore`: [tensor, offset, length] ranges not
        checked (e.g. what a timed-out transfer may have left). Reports mismatches inside and
        outside the segments separately."""
        c = self.cache(cache)
        nbytes = self.tensor_bytes(c)
        by_tensor: Dict[int, List[List[int]]] = {}
        for seg in copies:
            by_tensor.setdefault(int(seg[0]), []).append(seg)
        mismatches = []
        checked = 0
        for t in (tensors if tensors is not None else range(c.cache_desc.num_tensors)):
            actual = self.read_tensor(cache, t)
            if seed is not None:
                expect = pattern(seed, t, nbytes).copy()
                mask = None
            else:
                expect = np.zeros(nbytes, dtype=np.uint8)
                mask = np.zeros(nbytes, dtype=bool)
            inside = np.zeros(nbytes, dtype=bool)
            for _, d_off, s_seed, s_t, s_bytes, s_off, length in by_tensor.get(t, []):
                src = _PATTERNS.get(s_seed, s_t, s_bytes)
                if d_off + length > nbytes or s_off + length > s_bytes:
                    raise ValueError(f"worker: verify segment out of range: dst {d_off}+{length} of {nbytes}, "
                                     f"src {s_off}+{length} of {s_bytes}")
                expect[d_off:d_off + length] = src[s_off:s_off + length]
                inside[d_off:d_off + length] = True
                if mask is not None:
                    mask[d_off:d_off + length] = True
            bad = actual != expect
            if mask is not None:
                bad &= mask
            skip = np.zeros(nbytes, dtype=bool)
            for it, off, length in (ignore or []):
                if it == t:
                    skip[off:off + length] = True
            bad &= ~skip
            checked += int((nbytes if mask is None else mask.sum()) - (skip if mask is None else skip & mask).sum())
            if bad.any():
                bad_in = bad & inside
                bad_out = bad & ~inside
                first = int(np.argmax(bad))
                mismatches.append({
                    "tensor": t, "bad_bytes": int(bad.sum()), "bad_in_copied": int(bad_in.sum()),
                    "bad_outside_copied": int(bad_out.sum()), "first_bad_offset": first,
                    "expected": expect[first:first + 16].tobytes().hex(),
                    "actual": actual[first:first + 16].tobytes().hex()})
        return {"bytes_checked": checked, "mismatches": mismatches}

    # -- links ------------------------------------------------------------------------------
    def op_link(self, clusters: List[Dict[str, Any]], timeout: Optional[int] = None) -> Dict[str, Any]:
        infos = [self.make_cluster(c) for c in clusters]
        ret = self.dd.link_clusters(infos) if timeout is None else self.dd.link_clusters(infos, timeout)
        return _status_pair(ret)

    def op_unlink(self, clusters: List[Dict[str, Any]], timeout: Optional[int] = None,
                  force: Optional[bool] = None) -> Dict[str, Any]:
        infos = [self.make_cluster(c) for c in clusters]
        kwargs: Dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if force is not None:
            kwargs["force"] = force
        return _status_pair(self.dd.unlink_clusters(infos, **kwargs))

    def op_link_info(self, cluster_id: int) -> Dict[str, Any]:
        return json.loads(json.dumps(dict(self.dd.link_info(int(cluster_id))), default=_json_default))

    def op_link_cycles(self, cluster: Dict[str, Any], n: int, timeout: int = 3000,
                       transfer: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """n x (link, optional transfer, unlink); stops at the first failure, naming the cycle."""
        info = self.make_cluster(cluster)
        t0 = time.monotonic()
        for i in range(int(n)):
            ret = _status_pair(self.dd.link_clusters([info], timeout))
            if ret["per_cluster"] != ["LLM_SUCCESS"]:
                raise RuntimeError(f"cycle {i}: link_clusters returned {ret}")
            if transfer is not None:
                self._transfer(dict(transfer))
            ret = _status_pair(self.dd.unlink_clusters([info], timeout))
            if ret["per_cluster"] != ["LLM_SUCCESS"]:
                raise RuntimeError(f"cycle {i}: unlink_clusters returned {ret}")
        return {"cycles": int(n), "elapsed_s": time.monotonic() - t0}

    # -- transfers --------------------------------------------------------------------------
    @staticmethod
    def _range(spec: Any) -> Any:
        if spec is None:
            return None
        return range(*spec)

    def _transfer(self, req: Dict[str, Any]) -> None:
        op = req.pop("kind")
        cm = self.cm
        key = self.make_key(req.pop("key"))
        cache = self.cache(req.pop("cache"))
        kwargs: Dict[str, Any] = {}
        for name in ("src_layer_range", "dst_layer_range"):
            if name in req:
                kwargs[name] = self._range(req.pop(name))
        for name in ("batch_index", "size", "tensor_num_per_layer", "src_batch_index"):
            if name in req:
                kwargs[name] = req.pop(name)
        for name in ("src_blocks", "dst_blocks"):
            if name in req:
                kwargs[name] = list(req.pop(name))
        if req:
            raise TypeError(f"worker: unexpected transfer arguments {sorted(req)}")
        getattr(cm, op)(key, cache, **kwargs)

    def _transfer_op(self, kind: str, args: Dict[str, Any]) -> Dict[str, Any]:
        repeat = int(args.pop("repeat", 1))
        duration = args.pop("duration_s", None)
        done = 0
        t_end = None if duration is None else time.monotonic() + float(duration)
        try:
            while True:
                self._transfer(dict(args, kind=kind))
                done += 1
                if t_end is not None:
                    if time.monotonic() >= t_end:
                        break
                elif done >= repeat:
                    break
        except Exception as exc:
            exc.done = done  # type: ignore[attr-defined]
            raise
        return {"done": done}

    def op_pull_cache(self, **args: Any) -> Dict[str, Any]:
        return self._transfer_op("pull_cache", args)

    def op_pull_blocks(self, **args: Any) -> Dict[str, Any]:
        return self._transfer_op("pull_blocks", args)

    def op_push_cache(self, **args: Any) -> Dict[str, Any]:
        return self._transfer_op("push_cache", args)

    def op_push_blocks(self, **args: Any) -> Dict[str, Any]:
        return self._transfer_op("push_blocks", args)

    # -- composition / escape hatch ---------------------------------------------------------
    def op_parallel(self, requests: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Runs sub-requests in threads (each may carry "delay_s"); returns their replies."""
        replies: List[Optional[Dict[str, Any]]] = [None] * len(requests)
        t0 = time.monotonic()

        def run(i: int, sub: Dict[str, Any]) -> None:
            sub = dict(sub)
            delay = float(sub.pop("delay_s", 0.0))
            if delay:
                time.sleep(max(0.0, t0 + delay - time.monotonic()))
            replies[i] = self.execute(sub)

        threads = [threading.Thread(target=run, args=(i, r), daemon=True) for i, r in enumerate(requests)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return replies  # type: ignore[return-value]

    def op_exec(self, code: str) -> Any:
        """Runs Python in the worker (names: ld, np, dd, cm, w, caches); returns `result`."""
        ns = {"ld": self.ld, "np": np, "dd": self.dd, "w": self, "caches": self.caches,
              "cm": self.dd.cache_manager if self.dd is not None else None, "result": None}
        exec(code, ns)  # noqa: S102 - test harness
        return ns["result"]

    # -- dispatch ---------------------------------------------------------------------------
    def execute(self, req: Dict[str, Any]) -> Dict[str, Any]:
        req = dict(req)
        rid = req.pop("id", None)
        op = req.pop("op")
        req.pop("thread", None)
        start_at = req.pop("start_at", None)
        if start_at is not None:
            time.sleep(max(0.0, float(start_at) - time.monotonic()))
        reply: Dict[str, Any] = {"id": rid, "op": op}
        t0 = time.monotonic()
        try:
            handler = getattr(self, "op_" + op, None)
            if handler is None:
                raise ValueError(f"worker: unknown op {op!r}")
            result = handler(**req)
            reply.update(ok=True, result=result)
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the test
            reply.update(ok=False, error=_error_dict(exc))
            if hasattr(exc, "done"):
                reply["done"] = exc.done  # type: ignore[attr-defined]
        t1 = time.monotonic()
        reply.update(t_start=t0, t_end=t1, elapsed_s=t1 - t0)
        return reply


def _status_pair(ret: Any) -> Dict[str, Any]:
    from llm_datadist.status import code_2_status
    overall, per = ret
    return {"overall": code_2_status(int(overall)).name, "per_cluster": [code_2_status(int(c)).name for c in per]}


def main() -> None:
    global _out
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _out = os.fdopen(proto_fd, "w", buffering=1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    threading.Thread(target=_watch_parent, daemon=True).start()
    try:
        worker = Worker()
    except BaseException as exc:  # noqa: BLE001
        _emit({"event": "ready", "ok": False, "error": {"type": type(exc).__name__, "message": str(exc),
                                                          "traceback": traceback.format_exc()}})
        raise
    _emit({"event": "ready", "ok": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as exc:
            _emit({"id": None, "ok": False, "error": {"type": "ProtocolError", "message": f"bad line {line!r}: {exc}"}})
            continue
        if req.get("op") == "exit":
            _emit({"id": req.get("id"), "op": "exit", "ok": True, "result": None})
            _out.flush()
            os._exit(int(req.get("code", 0)))
        if req.get("thread"):
            threading.Thread(target=lambda r=req: _emit(worker.execute(r)), daemon=True).start()
        else:
            _emit(worker.execute(req))
    os._exit(0)


if __name__ == "__main__":
    # The access-control tests run a worker as another uid: it drops root itself, after the
    # interpreter started (which another uid may not be allowed to execute from where it lives).
    if os.environ.get("LLMDD_TEST_WORKER_UID"):
        uid = int(os.environ["LLMDD_TEST_WORKER_UID"])
        import zlib  # noqa: F401 - loaded as root (with what numpy loads lazily): they may live where uid cannot read
        import llm_datadist  # noqa: F401
        np.random.default_rng(0).integers(0, 255, 16, dtype=np.uint8)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    main()
