# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist demo`: a prefill process and a decode process on this machine.

The decode (this process) starts a prefill child on loopback, links to it, pulls a KV cache
slot by request key (twice: the second pull finds the key consumed), a slot by cache id and
batch index, a layer range, and paged blocks; checks every byte of its caches after each
pull; then copies and swaps blocks locally, unlinks, and checks that the pools are empty.
Host memory by default; CUDA device memory when a CUDA device is available (and
`--device-backend` is not `cpu`). Prints what moved, at what GB/s, over which transport.

    run_demo(args) -> 0 when every check passed, 1 otherwise
    add_arguments(parser) adds the options run_demo reads (all optional on args).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["add_arguments", "run_demo"]

PREFILL_ID = 1
DECODE_ID = 2
LAYERS = 4                          # 2 tensors (K, V) per layer
BATCH, SEQ, HIDDEN = 4, 2048, 1024  # contiguous cache: fp16, 4 MiB per slot and tensor
NUM_BLOCKS, BLOCK_TOKENS, HEADS, HEAD_DIM = 256, 16, 8, 128   # blocks cache: bf16, 32 KiB blocks
PULLED_BLOCKS = 192
REQ_BASE = 100                      # slot i of the prefill's cache is request REQ_BASE + i
POOL_BYTES = 256 << 20
SLOT_BYTES = 2 * LAYERS * SEQ * HIDDEN * 2                           # one batch slot, every tensor
BLOCK_BYTES = 2 * LAYERS * BLOCK_TOKENS * HEADS * HEAD_DIM * 2        # one block, every tensor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (cli.py's `demo` subcommand)."""
    parser.add_argument("--device-backend", choices=["auto", "cuda", "cpu"], default=None,
                        help="what Placement.DEVICE means; cpu forces host memory for the pulls")
    parser.add_argument("--transport", choices=["auto", "tcp", "ucx"], default="auto",
                        help="auto: shm (host) or cuda_ipc (GPU) on one machine; tcp: force tcp; "
                             "ucx: force UCX (UCX_TLS applies)")
    parser.add_argument("--seed", type=int, default=0)


# ---- data ---------------------------------------------------------------------------------------

def _pattern(seed: int, which: str, tensor: int, shape: Sequence[int]) -> np.ndarray:
    """The prefill's bytes for one tensor, as uint16; both processes regenerate them."""
    rng = np.random.default_rng([seed, {"kv": 1, "blocks": 2}[which], tensor])
    return rng.integers(0, 1 << 16, size=tuple(shape), dtype=np.uint16)


def _kv_desc(ld: Any, placement: Any) -> Any:
    return ld.CacheDesc(2 * LAYERS, [BATCH, SEQ, HIDDEN], ld.DataType.DT_FLOAT16, placement)


def _blocks_desc(ld: Any, placement: Any) -> Any:
    return ld.CacheDesc(2 * LAYERS, [NUM_BLOCKS, BLOCK_TOKENS, HEADS, HEAD_DIM], ld.DataType.DT_BF16, placement)


class _Views:
    """Reads and writes a cache's tensors as uint16 numpy arrays (numpy views for host and the
    CPU device, torch for CUDA). Holds no view between calls: views pin pool memory."""

    def __init__(self, cache: Any, cuda: bool) -> None:
        self.cache, self.cuda = cache, cuda

    def write(self, i: int, data: np.ndarray) -> None:
        if self.cuda:
            import torch
            view = self.cache.torch(i)
            view.view(torch.int16).copy_(torch.from_numpy(data.view(np.int16)).to(view.device))
            torch.cuda.synchronize()
        else:
            self.cache.numpy(i).view(np.uint16)[...] = data

    def read(self, i: int) -> np.ndarray:
        if self.cuda:
            import torch
            return self.cache.torch(i).view(torch.int16).cpu().numpy().view(np.uint16)
        return np.array(self.cache.numpy(i).view(np.uint16))

    def zero(self) -> None:
        for i in range(self.cache.cache_desc.num_tensors):
            if self.cuda:
                self.cache.torch(i).zero_()
            else:
                self.cache.numpy(i)[...] = 0
        if self.cuda:
            import torch
            torch.cuda.synchronize()


def _config(ld: Any, listen: Optional[str], device_backend: Optional[str], transport: str,
            host_pool: int, device_pool: int) -> Dict[str, str]:
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    if host_pool:
        cfg.host_mem_pool_cfg = json.dumps({"memory_size": host_pool})
    if device_pool:
        cfg.mem_pool_cfg = json.dumps({"memory_size": device_pool})
    if listen:
        cfg.listen_ip_info = listen
    if device_backend:
        cfg.device_backend = device_backend
    cfg.sync_kv_timeout = 10000
    opts = cfg.generate_options()
    opts["llmdd.Transport"] = "tcp" if transport == "tcp" else "auto"   # docs/transfer.md; overrides LLMDD_TRANSPORT
    return opts


# ---- the prefill process ------------------------------------------------------------------------

def _prefill_main(argv: Sequence[str]) -> int:
    """The child: `python -c "from llm_datadist._demo import _prefill_main; ..." CONFIG_JSON`.
    Answers JSON lines on its stdout; everything else it prints goes to stderr."""
    conf = json.loads(argv[0])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def reply(**kw: Any) -> None:
        proto.write(json.dumps(kw) + "\n")

    import llm_datadist as ld
    try:
        placement = ld.Placement.DEVICE if conf["cuda"] else ld.Placement.HOST
        pools = (0, POOL_BYTES) if conf["cuda"] else (POOL_BYTES, 0)
        dd = ld.LLMDataDist(ld.LLMRole.PROMPT, PREFILL_ID)
        dd.init(_config(ld, f"127.0.0.1:{conf['port']}", conf["device_backend"], conf["transport"], *pools))
        cm = dd.cache_manager
        kv = cm.allocate_cache(_kv_desc(ld, placement),
                               [ld.CacheKey(PREFILL_ID, req_id=REQ_BASE + i) for i in range(BATCH)])
        blocks = cm.allocate_blocks_cache(_blocks_desc(ld, placement), ld.BlocksCacheKey(PREFILL_ID, 0))
        for which, cache in (("kv", kv), ("blocks", blocks)):
            views = _Views(cache, conf["cuda"])
            for t in range(cache.cache_desc.num_tensors):
                views.write(t, _pattern(conf["seed"], which, t, cache.cache_desc.shape))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        reply(ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    reply(ok=True, pid=os.getpid(), kv_cache_id=kv.cache_id, device_backend=dd.device_backend)
    try:
        for line in sys.stdin:           # the parent's messages; EOF (parent gone) ends the child
            msg = json.loads(line)
            if msg.get("op") == "link_info":
                fn = getattr(dd, "link_info", None)
                try:
                    reply(ok=True, info=fn(DECODE_ID) if fn else None)
                except Exception as exc:  # noqa: BLE001
                    reply(ok=False, error=f"{type(exc).__name__}: {exc}")
            elif msg.get("op") == "quit":
                break
    finally:
        dd.finalize()
    reply(ok=True, bye=True)
    return 0


class _Prefill:
    def __init__(self, conf: Dict[str, Any], timeout_s: float = 120.0) -> None:
        code = "import sys; from llm_datadist._demo import _prefill_main; sys.exit(_prefill_main(sys.argv[1:]))"
        self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(conf)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self._buf = b""
        self.hello = self._read(timeout_s)
        if not self.hello.get("ok"):
            self.close()
            raise RuntimeError(f"the prefill process did not start: {self.hello.get('error')}")

    def _read(self, timeout_s: float) -> Dict[str, Any]:
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"the prefill process (pid {self.proc.pid}) did not answer in {timeout_s:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the prefill process (pid {self.proc.pid}) exited with code {self.proc.wait(5)}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, timeout_s: float = 30.0, **msg: Any) -> Dict[str, Any]:
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout_s)

    def close(self) -> Optional[int]:
        if self.proc.poll() is None:
            try:
                self.call(op="quit")
            except (OSError, RuntimeError, TimeoutError, ValueError):
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _start_prefill(conf: Dict[str, Any]) -> _Prefill:
    """Starts the child on a free loopback port (three tries: a port can be taken meanwhile)."""
    for attempt in range(3):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            conf["port"] = s.getsockname()[1]
        try:
            return _Prefill(conf)
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# ---- the decode process (this one) -------------------------------------------------------------

class _Report:
    def __init__(self) -> None:
        self.failures = 0
        self.moved = 0

    def check(self, label: str, ok: bool, nbytes: int = 0, seconds: float = 0.0, extra: str = "",
              detail: str = "") -> bool:
        self.failures += 0 if ok else 1
        if nbytes:
            rate = f"{nbytes / seconds / 1e9:7.2f} GB/s" if seconds > 0 else "      - GB/s"
            size = f"{nbytes / 2**20:8.2f} MiB"
        else:
            rate, size = " " * 12, " " * 12
        print(f"  {'OK  ' if ok else 'FAIL'} {label:<52} {size}  {rate}  {extra}".rstrip())
        if not ok and detail:
            print(f"       {detail}")
        return ok


def _status_name(exc: BaseException) -> str:
    code = getattr(exc, "status_code", None)
    return getattr(code, "name", type(exc).__name__)


def run_demo(args: Optional[argparse.Namespace] = None) -> int:
    import llm_datadist as ld
    from llm_datadist import BlocksCacheKey, CacheKey, CacheKeyByIdAndIndex, LLMClusterInfo, LLMException

    args = args if args is not None else argparse.Namespace()
    device_backend = getattr(args, "device_backend", None)
    transport = getattr(args, "transport", None) or "auto"
    seed = getattr(args, "seed", 0) or 0
    cuda = device_backend != "cpu" and bool(ld._core.cuda_info().get("available"))
    placement = ld.Placement.DEVICE if cuda else ld.Placement.HOST
    other = ld.Placement.HOST if cuda else ld.Placement.DEVICE      # for the local swap checks
    where = "CUDA device memory" if cuda else "host memory"
    rep = _Report()
    rng = np.random.default_rng(seed)

    conf = {"cuda": cuda, "device_backend": device_backend, "transport": transport, "seed": seed}
    try:
        prefill = _start_prefill(conf)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"llm-datadist demo: {exc}")
        print("demo FAILED (the prefill process)")
        return 1
    print(f"llm-datadist demo: prefill (cluster {PREFILL_ID}, pid {prefill.proc.pid}, 127.0.0.1:{conf['port']}) "
          f"and decode (cluster {DECODE_ID}, pid {os.getpid()}), {where}")

    dd = ld.LLMDataDist(ld.LLMRole.DECODER, DECODE_ID)
    try:
        dd.init(_config(ld, None, "cuda" if cuda else device_backend, transport, POOL_BYTES, POOL_BYTES))
        cm = dd.cache_manager
        kv = cm.allocate_cache(_kv_desc(ld, placement))
        blocks = cm.allocate_blocks_cache(_blocks_desc(ld, placement))
        kv_v, blocks_v = _Views(kv, cuda), _Views(blocks, cuda)
        kv_v.zero()
        blocks_v.zero()
        # What this process expects in its caches, updated after each pull.
        kv_src = [_pattern(seed, "kv", t, kv.cache_desc.shape) for t in range(2 * LAYERS)]
        blocks_src = [_pattern(seed, "blocks", t, blocks.cache_desc.shape) for t in range(2 * LAYERS)]
        kv_exp = [np.zeros_like(a) for a in kv_src]
        blocks_exp = [np.zeros_like(a) for a in blocks_src]

        def same(views: _Views, expected: List[np.ndarray]) -> tuple:
            """Every byte of every tensor against `expected`; on a mismatch `expected` takes the
            actual bytes, so that later checks judge only their own operation."""
            first = ""
            for t, exp in enumerate(expected):
                got = views.read(t)
                if not np.array_equal(got, exp):
                    if not first:
                        bad = np.argwhere(got != exp)
                        first = (f"tensor {t}: {len(bad)} elements differ, first at index "
                                 f"{tuple(int(i) for i in bad[0])}")
                    exp[...] = got
            return not first, first

        # -- link
        cluster = LLMClusterInfo()
        cluster.remote_cluster_id = PREFILL_ID
        cluster.append_remote_ip_info("127.0.0.1", conf["port"])
        t0 = time.perf_counter()
        linked, link_label = False, ""
        try:
            ret, rets = dd.link_clusters([cluster], timeout=10000)
            linked = ret == ld.LLMStatusCode.LLM_SUCCESS
            info = dd.link_info(PREFILL_ID) if linked and hasattr(dd, "link_info") else {}
            name = info.get("transport", "?")
            if cuda and name == "shm" and info.get("cuda_ipc"):
                name = "cuda_ipc"              # device pools on a same-host link go over CUDA IPC
            link_label = f"{name} ({info.get('reason', '')})" if linked else ""
            rep.check(f"link_clusters -> {ret.name}", linked, extra=f"{(time.perf_counter() - t0) * 1e3:.1f} ms",
                      detail=f"per cluster: {[r.name for r in rets]}")
        except LLMException as exc:
            rep.check(f"link_clusters -> {_status_name(exc)}", False, detail=str(exc))
        if linked:
            print(f"  link: {link_label}")
            tname = link_label.split(" ")[0]

            def pull(label: str, nbytes: int, fn: Any, expect_after: Any, views: _Views,
                     expected: List[np.ndarray]) -> None:
                try:
                    t0 = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t0
                except LLMException as exc:
                    rep.check(label, False, detail=f"{_status_name(exc)}: {exc}")
                    return
                expect_after()
                ok, detail = same(views, expected)
                if ok:
                    rep.moved += nbytes
                rep.check(label, ok, nbytes, dt, tname, detail)

            # 1. a request's slot by CacheKey: remote slot 1 -> local slot 0 (consumes the req key)
            def exp1() -> None:
                for t in range(2 * LAYERS):
                    kv_exp[t][0] = kv_src[t][1]
            pull(f"pull_cache CacheKey(req {REQ_BASE + 1}) -> slot 0", SLOT_BYTES,
                 lambda: cm.pull_cache(CacheKey(PREFILL_ID, req_id=REQ_BASE + 1), kv, batch_index=0), exp1,
                 kv_v, kv_exp)
            # 2. the same key again: consumed by the complete pull
            try:
                cm.pull_cache(CacheKey(PREFILL_ID, req_id=REQ_BASE + 1), kv, batch_index=3)
                rep.check("second pull of a consumed req key is refused", False,
                          detail="it succeeded; expected LLM_KV_CACHE_NOT_EXIST")
            except LLMException as exc:
                rep.check(f"second pull of a consumed req key -> {_status_name(exc)}",
                          exc.status_code == ld.LLMStatusCode.LLM_KV_CACHE_NOT_EXIST, detail=str(exc))
            ok, detail = same(kv_v, kv_exp)
            rep.check("a refused pull wrote nothing", ok, detail=detail)

            # 3. by cache id and batch index: remote slot 3 -> local slot 1
            def exp3() -> None:
                for t in range(2 * LAYERS):
                    kv_exp[t][1] = kv_src[t][3]
            pull("pull_cache CacheKeyByIdAndIndex(slot 3) -> slot 1", SLOT_BYTES,
                 lambda: cm.pull_cache(CacheKeyByIdAndIndex(PREFILL_ID, prefill.hello["kv_cache_id"], 3), kv,
                                       batch_index=1), exp3, kv_v, kv_exp)

            # 4. layers 1..2 only (tensors 2..5) of request 102 -> local slot 2
            layers = range(1, 3)

            def exp4() -> None:
                for t in range(layers.start * 2, layers.stop * 2):
                    kv_exp[t][2] = kv_src[t][2]
            pull(f"pull_cache CacheKey(req {REQ_BASE + 2}) layers 1-2 -> slot 2", SLOT_BYTES * len(layers) // LAYERS,
                 lambda: cm.pull_cache(CacheKey(PREFILL_ID, req_id=REQ_BASE + 2), kv, batch_index=2,
                                       src_layer_range=layers, dst_layer_range=layers), exp4, kv_v, kv_exp)

            # 5. paged blocks: random distinct remote blocks -> random distinct local blocks
            src_blocks = rng.choice(NUM_BLOCKS, PULLED_BLOCKS, replace=False).tolist()
            dst_blocks = rng.choice(NUM_BLOCKS, PULLED_BLOCKS, replace=False).tolist()

            def exp5() -> None:
                for t in range(2 * LAYERS):
                    blocks_exp[t][dst_blocks] = blocks_src[t][src_blocks]
            pull(f"pull_blocks BlocksCacheKey {PULLED_BLOCKS} random blocks",
                 PULLED_BLOCKS * BLOCK_BYTES,
                 lambda: cm.pull_blocks(BlocksCacheKey(PREFILL_ID, 0), blocks, src_blocks, dst_blocks), exp5,
                 blocks_v, blocks_exp)

            try:
                info = dd.link_info(PREFILL_ID) if hasattr(dd, "link_info") else {}
                remote = prefill.call(op="link_info").get("info") or {}
                print(f"  link counters: decode pulled {info.get('bytes_pulled', '?')} B in {info.get('pulls', '?')} "
                      f"pulls ({info.get('errors', '?')} errors); prefill sees peer pid {remote.get('peer_pid', '?')}")
            except LLMException as exc:
                rep.check("link_info", False, detail=f"{_status_name(exc)}: {exc}")

            try:
                ret, rets = dd.unlink_clusters([cluster], timeout=10000)
                rep.check(f"unlink_clusters -> {ret.name}", ret == ld.LLMStatusCode.LLM_SUCCESS,
                          detail=f"per cluster: {[r.name for r in rets]}")
            except LLMException as exc:
                rep.check(f"unlink_clusters -> {_status_name(exc)}", False, detail=str(exc))

        # -- local operations on what arrived (they also run when the link failed)
        t0 = time.perf_counter()
        cm.copy_cache(kv, kv, dst_batch_index=3, src_batch_index=0)
        dt = time.perf_counter() - t0
        for t in range(2 * LAYERS):
            kv_exp[t][3] = kv_exp[t][0]
        ok, detail = same(kv_v, kv_exp)
        rep.check("copy_cache slot 0 -> slot 3 (local)", ok, SLOT_BYTES, dt, detail=detail)

        other_blocks = cm.allocate_blocks_cache(_blocks_desc(ld, other))
        other_v = _Views(other_blocks, False)     # host memory, or the CPU device
        other_v.zero()
        mapping = {int(s): int(d) for s, d in zip(rng.permutation(NUM_BLOCKS)[:64], rng.permutation(NUM_BLOCKS)[:64])}
        t0 = time.perf_counter()
        cm.swap_blocks(blocks, other_blocks, mapping)
        dt = time.perf_counter() - t0
        other_exp = [np.zeros_like(a) for a in blocks_exp]
        for t in range(2 * LAYERS):
            other_exp[t][list(mapping.values())] = blocks_exp[t][list(mapping.keys())]
        ok, detail = same(other_v, other_exp)
        rep.check(f"swap_blocks {placement.name.lower()} -> {other.name.lower()} ({len(mapping)} blocks, local)", ok,
                  len(mapping) * BLOCK_BYTES, dt, detail=detail)

        t0 = time.perf_counter()
        cm.copy_blocks(blocks, {0: [1, 2]})
        dt = time.perf_counter() - t0
        for t in range(2 * LAYERS):
            blocks_exp[t][1] = blocks_exp[t][0]
            blocks_exp[t][2] = blocks_exp[t][0]
        ok, detail = same(blocks_v, blocks_exp)
        rep.check("copy_blocks 0 -> [1, 2] (local)", ok, 2 * BLOCK_BYTES, dt, detail=detail)

        back = {d: s for s, d in mapping.items()}
        t0 = time.perf_counter()
        cm.swap_blocks(other_blocks, blocks, back)
        dt = time.perf_counter() - t0
        for t in range(2 * LAYERS):
            blocks_exp[t][list(back.values())] = other_exp[t][list(back.keys())]
        ok, detail = same(blocks_v, blocks_exp)
        rep.check(f"swap_blocks {other.name.lower()} -> {placement.name.lower()} ({len(back)} blocks, local)", ok,
                  len(back) * BLOCK_BYTES, dt, detail=detail)

        cm.deallocate_cache(kv)
        cm.deallocate_blocks_cache(blocks)
        cm.deallocate_blocks_cache(other_blocks)
        empty = all((cm.pool_stats(p) or {}).get("used_bytes", 0) == 0 for p in (ld.Placement.HOST,
                                                                                   ld.Placement.DEVICE))
        rep.check("pools empty after deallocation", empty)
    except LLMException as exc:
        rep.check(f"unexpected {_status_name(exc)}", False, detail=str(exc))
    finally:
        dd.finalize()
        rc = prefill.close()
    rep.check(f"prefill process exited with code {rc}", rc == 0)
    if rep.failures == 0:
        print(f"demo passed: pulled {rep.moved / 2**20:.2f} MiB between two processes over {link_label}, "
              f"every byte checked")
        return 0
    print(f"demo FAILED ({rep.failures} checks)")
    return 1

