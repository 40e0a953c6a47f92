# SPDX-License-Identifier: Apache-2.0
"""Transfer benchmark: the reference cases of peer_baseline.md, pulled between two processes,
beside the memcpy / CMA ceilings measured in the same run.

(The runnable code of `benchmarks/bench_transfer.py`, which is a thin script over this module,
and the transfer part of `llm-datadist bench` (`llm_datadist._bench.suite`).)

    python benchmarks/bench_transfer.py [--transport shm,tcp] [--placement host[,device]]
        [--cases a,b,c,d] [--iters N] [--warmup N] [--check | --no-check]
        [--out benchmarks/results/<name>.json]

A "prefill" child process (this file, started with `python -c`) owns a source pool filled
with a seeded pattern and listens on loopback; this process is the "decode": it links to
the prefill and READs (pulls) blocks into its own pool with `CacheManager.pull_blocks`.
Per case the prefill allocates one blocks cache over its whole pool,
`CacheDesc(1, [pool / block, block], DT_UINT8, placement)` under a `BlocksCacheKey`, and
the decode allocates the same shape; one request is one `pull_blocks` call with the case's
random distinct (seeded) source and destination slot lists, so no two blocks can be merged
(`tensor_num_per_layer=1`: upstream requires it to be <= num_tensors, here 1).

Reference cases (pool 256 MiB):
  a  1 x 256 MiB            10 iterations (2 warm-up)
  b  1024 x 64 KiB          20 iterations (2 warm-up)
  c  4096 x 16 KiB          20 iterations (2 warm-up)
  d  1 x 4 KiB              1000 iterations (50 warm-up): latency
Custom cases: NxSIZE, e.g. `--cases c,512x256K,16x4M`.  Throughput = bytes / median request
time.  Every byte of the destination pool is checked after every case (moved slots equal
the source pattern, every other byte still zero); checking is outside the timed region.

Ceilings, same run, same slot lists (a helper compiled with `cc` at start; without a
compiler only `memcpy` remains, as a Python ctypes loop, and the output says so):
  memcpy     the same request done by memcpy in one process, 1 thread (C loop)
  memcpy_mt  the same, split over --threads threads
  cma        the same request read from the prefill process with process_vm_readv
  cuda_d2d   device placement on CUDA: torch device-to-device copy (and 2-pass gather)

Our timings are taken in Python around each `pull_blocks` call (what a user pays, API
included); the C ceilings time themselves with clock_gettime.  Results are a terminal
table and, with --out, JSON (command, machine, versions, every per-iteration timing).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import write_record
from .report import Column, Table, fmt, quantiles

SCHEMA = "llm_datadist.bench_transfer/1"
MiB = 1 << 20
PREFILL_ID = 1
DECODE_ID = 2
PATTERN_SEED = 1234      # as ../shared/peer_bench/common.py: the same bytes as the peer runs
SLOT_SEED = 7            # slots: default_rng(SLOT_SEED + block).choice(...), as common.py
TENSOR_SHIFT = 4099      # bytes between the pattern windows of consecutive tensors (Case.pattern_offset)

# ../shared/reference/peer_baseline.md, 2-vCPU x86-64 VM, host DRAM, loopback (median of 3).
PEER_BASELINE = {
    "source": "peer_baseline.md (nixl-cu13 1.5.1 UCX default; mooncake 0.3.13.post1 tcp), 2-vCPU VM",
    "nixl": {"a": 3.22, "b": 1.92, "c": 1.36, "d_us": 3.9},
    "nixl_tcp": {"a": 0.71, "b": 0.65, "c": 0.57, "d_us": 34.0},
    "mooncake": {"a": 1.93, "b": 1.30, "c": 0.56, "d_us": 51.0},
}


# ---------------------------------------------------------------------------------------------
# cases, pattern, slots

@dataclass
class Case:
    name: str            # "a".."d" or "NxSIZE"
    nblocks: int         # blocks per request
    block: int           # bytes per block
    iters: int
    warmup: int
    reference: bool = True   # exactly the peer_baseline.md case
    note: str = ""
    # Generalised for `llm-datadist bench` (the defaults are bench_transfer.py's one-tensor cases):
    tensors: int = 1         # tensors of the cache (a Llama-like layout: 32 layers x K/V = 64)
    nslots: int = 0          # blocks (slots) per tensor in each side's cache; 0: pool // block
    op: str = "pull_blocks"  # pull_blocks (a BlocksCacheKey) or pull_cache (a prefix CacheKey)
    shape: Optional[List[int]] = None   # the CacheDesc shape (default [nslots, block] of DT_UINT8)
    dtype: str = "DT_UINT8"
    group: str = ""          # reference, sweep, batch, model, cache (the suite's grouping)
    label: str = ""          # a longer description for tables

    @property
    def nbytes(self) -> int:
        return self.tensors * self.nblocks * self.block

    @property
    def tensor_bytes(self) -> int:
        return self.nslots * self.block

    @property
    def pool_bytes(self) -> int:
        return self.tensors * self.nslots * self.block

    def pattern_offset(self, tensor: int) -> int:
        """Tensor t's source bytes are pattern[offset : offset + tensor_bytes]: tensors overlap in
        one pattern shifted by TENSOR_SHIFT (not a multiple of any block), so a pattern as big as
        one tensor serves a 64-tensor cache while every tensor's blocks still differ."""
        return tensor * TENSOR_SHIFT

    @property
    def pattern_bytes(self) -> int:
        return self.pattern_offset(self.tensors - 1) + self.tensor_bytes


REFERENCE_CASES = {
    # name: (nblocks, block, iters, warmup); block None = the whole pool
    "a": (1, None, 10, 2),
    "b": (1024, 64 << 10, 20, 2),
    "c": (4096, 16 << 10, 20, 2),
    "d": (1, 4 << 10, 1000, 50),
}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 4096, 16K, 4M)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def human(nbytes: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift} {unit}"
    return f"{nbytes} B"


def make_cases(spec: str, pool_bytes: int, iters: Optional[int], warmup: Optional[int]) -> List[Case]:
    cases = []
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        if name in REFERENCE_CASES:
            nblocks, block, it, wu = REFERENCE_CASES[name]
            block = pool_bytes if block is None else block
            reference = pool_bytes == 256 * MiB
        else:
            m = re.fullmatch(r"(\d+)x(\S+)", name)
            if not m:
                raise SystemExit(f"--cases: {name!r} is neither a, b, c, d nor NxSIZE (e.g. 4096x16K)")
            nblocks, block, it, wu, reference = int(m.group(1)), parse_size(m.group(2)), 20, 2, False
        note = []
        if block > pool_bytes or block <= 0:
            raise SystemExit(f"--cases {name}: block {block} does not fit the {human(pool_bytes)} pool")
        nslots = pool_bytes // block
        if nblocks > nslots:
            note.append(f"{nblocks} blocks capped to the pool's {nslots} slots")
            nblocks, reference = nslots, False
        if iters is not None and iters != it:
            note.append(f"iterations {it} -> {iters} (--iters)")
            it = iters
        if warmup is not None and warmup != wu:
            note.append(f"warm-up {wu} -> {warmup} (--warmup)")
            wu = warmup
        cases.append(Case(name, nblocks, block, it, wu, reference, "; ".join(note), nslots=nslots,
                          group="reference" if name in REFERENCE_CASES else "custom"))
    return cases


def make_pattern(nbytes: int, seed: int = PATTERN_SEED) -> np.ndarray:
    """The source pool's bytes; both processes regenerate them (same as peer_bench/common.py)."""
    return np.random.default_rng(seed).integers(0, 256, size=nbytes, dtype=np.uint8)


def slots_for(case: Case, pool_bytes: Optional[int], seed: int = SLOT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """(remote_slots, local_slots): random distinct slots of block size (same as common.py)."""
    nslots = pool_bytes // case.block if pool_bytes else case.nslots
    rng = np.random.default_rng(seed + case.block)
    remote = rng.choice(nslots, size=case.nblocks, replace=False)
    local = rng.choice(nslots, size=case.nblocks, replace=False)
    return remote.astype(np.int64), local.astype(np.int64)


def verify_pool(case: Case, pattern: np.ndarray, dst: np.ndarray, remote: np.ndarray,
                local: np.ndarray) -> Tuple[bool, str]:
    """Every byte of the destination pool: moved slots equal the source slots, the rest is zero
    (it was zeroed before the case), so a stray write anywhere is caught too."""
    S = case.block
    dv = dst.reshape(-1)[: (dst.size // S) * S].reshape(-1, S)
    sv = pattern[: (pattern.size // S) * S].reshape(-1, S)
    got = dv[local]
    bad = np.flatnonzero((got != sv[remote]).any(axis=1))
    if bad.size:
        i = int(bad[0])
        return False, (f"{bad.size} of {case.nblocks} blocks differ; first: local slot {int(local[i])} "
                       f"<- remote slot {int(remote[i])}")
    stray = int(np.count_nonzero(dst)) - int(np.count_nonzero(got))
    if stray:
        return False, f"{stray} non-zero bytes outside the destination slots"
    return True, ""


def verify_case(case: Case, pattern: np.ndarray, dst_tensors: Sequence[np.ndarray], remote: np.ndarray,
                local: np.ndarray) -> Tuple[bool, str]:
    """verify_pool for each tensor of the case: tensor t's source bytes are
    pattern[case.pattern_offset(t):][:tensor_bytes]."""
    T = case.tensor_bytes
    for t, dst in enumerate(dst_tensors):
        o = case.pattern_offset(t)
        ok, detail = verify_pool(case, pattern[o:o + T], dst.reshape(-1), remote, local)
        if not ok:
            return False, (f"tensor {t}: {detail}" if case.tensors > 1 else detail)
    return True, ""


# ---------------------------------------------------------------------------------------------
# results

@dataclass
class Row:
    system: str              # llm_datadist | memcpy | memcpy_mt | cma | cuda_d2d | cuda_gather2 (| nixl ...)
    case: str
    placement: str
    transport: str = ""      # the link's transport (llm_datadist rows)
    op: str = ""             # pull_blocks (llm_datadist rows) or how the ceiling copies
    bytes: int = 0
    nblocks: int = 0
    block_bytes: int = 0
    warmup: int = 0
    times_us: List[float] = field(default_factory=list)
    verified: Optional[bool] = None   # None: --no-check
    verify_detail: str = ""
    error: str = ""
    pass_index: int = 0      # which transport pass (llm_datadist rows)
    frac_of: Dict[str, float] = field(default_factory=dict)   # GB/s over each ceiling's, same case

    def stats(self) -> Dict[str, Any]:
        if not self.times_us:
            return {}
        q = quantiles(self.times_us, digits=2)
        med, best = float(np.median(self.times_us)), min(self.times_us)
        return {"iters": q["n"], "median_us": q["median"], "p99_us": q["p99"], "min_us": q["min"],
                "mean_us": q["mean"], "GBps": round(self.bytes / med / 1e3, 3) if med > 0 else None,
                "GBps_best": round(self.bytes / best / 1e3, 3) if best > 0 else None}

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["times_us"] = [round(x, 3) for x in self.times_us]
        d.update(self.stats())
        return d


_LOG_HOOK: Optional[Any] = None      # the suite's progress line: called with each message instead


def log(msg: str) -> None:
    if _LOG_HOOK is not None:
        _LOG_HOOK(msg)
        return
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the ceilings' native helper (compiled at run time; numpy/ctypes fallback without a compiler)

_HELPER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct { char *dst; const char *src; const int64_t *doff, *soff; int64_t n, len; } job_t;

static void *run_job(void *arg) {
  job_t *j = (job_t *)arg;
  for (int64_t i = 0; i < j->n; i++) memcpy(j->dst + j->doff[i], j->src + j->soff[i], (size_t)j->len);
  return NULL;
}

/* dst + doff[i] <- src + soff[i], len bytes each, i < n; warmup + iters times with nthreads
   threads (n == 1: the block is split in byte ranges); times[k] = seconds of timed iteration k. */
int llmdd_gather(char *dst, const char *src, const int64_t *doff, const int64_t *soff, int64_t n,
                 int64_t len, int nthreads, int warmup, int iters, double *times) {
  static const int64_t zero = 0;
  if (nthreads < 1) nthreads = 1;
  if (nthreads > 64) nthreads = 64;
  job_t jobs[64];
  int njobs = nthreads;
  if (n == 1) {
    int64_t chunk = (len / nthreads + 4095) & ~(int64_t)4095;
    njobs = 0;
    for (int64_t off = 0; off < len && njobs < nthreads; off += chunk, njobs++) {
      int64_t l = (off + chunk > len || njobs == nthreads - 1) ? len - off : chunk;
      jobs[njobs] = (job_t){dst + doff[0] + off, src + soff[0] + off, &zero, &zero, 1, l};
    }
  } else {
    if (njobs > n) njobs = (int)n;
    int64_t per = n / njobs, extra = n % njobs, at = 0;
    for (int t = 0; t < njobs; t++) {
      int64_t cnt = per + (t < extra);
      jobs[t] = (job_t){dst, src, doff + at, soff + at, cnt, len};
      at += cnt;
    }
  }
  pthread_t th[64];
  for (int it = 0; it < warmup + iters; it++) {
    double t0 = now();
    if (njobs == 1) {
      run_job(&jobs[0]);
    } else {
      for (int t = 1; t < njobs; t++)
        if (pthread_create(&th[t], NULL, run_job, &jobs[t])) return -EAGAIN;
      run_job(&jobs[0]);
      for (int t = 1; t < njobs; t++) pthread_join(th[t], NULL);
    }
    double dt = now() - t0;
    if (it >= warmup) times[it - warmup] = dt;
  }
  return 0;
}

/* The same request read from another process with process_vm_readv (CMA), IOV_MAX per call. */
int llmdd_cma(int pid, char *dst, uint64_t remote, const int64_t *doff, const int64_t *soff, int64_t n,
              int64_t len, int warmup, int iters, double *times) {
  struct iovec *l = calloc((size_t)n, sizeof(*l)), *r = calloc((size_t)n, sizeof(*r));
  if (!l || !r) { free(l); free(r); return -ENOMEM; }
  for (int64_t i = 0; i < n; i++) {
    l[i].iov_base = dst + doff[i]; l[i].iov_len = (size_t)len;
    r[i].iov_base = (void *)(uintptr_t)(remote + (uint64_t)soff[i]); r[i].iov_len = (size_t)len;
  }
  int rc = 0;
  for (int it = 0; it < warmup + iters && rc == 0; it++) {
    double t0 = now();
    for (int64_t off = 0; off < n; off += 1024) {
      int64_t k = n - off < 1024 ? n - off : 1024;
      ssize_t got = process_vm_readv(pid, l + off, (unsigned long)k, r + off, (unsigned long)k, 0);
      if (got < 0) { rc = -errno; break; }
      if (got != (ssize_t)(k * len)) { rc = -EIO; break; }
    }
    double dt = now() - t0;
    if (it >= warmup) times[it - warmup] = dt;
  }
  free(l); free(r);
  return rc;
}
"""


class Helper:
    """The compiled ceiling helper, or None-equivalent fallbacks (reason in .note)."""

    def __init__(self) -> None:
        self.lib = None
        self.note = ""
        self._dir = tempfile.mkdtemp(prefix="llmdd_bench_")
        cc = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
        if cc is None:
            self.note = "no C compiler: memcpy ceiling is a Python ctypes.memmove loop; memcpy_mt and cma skipped"
            return
        src, so = os.path.join(self._dir, "helper.c"), os.path.join(self._dir, "helper.so")
        Path(src).write_text(_HELPER_C)
        out = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-pthread", "-o", so, src], capture_output=True, text=True)
        if out.returncode != 0:
            self.note = f"ceiling helper did not compile ({cc}): {out.stderr.strip()[:300]}; using ctypes fallback"
            return
        lib = ctypes.CDLL(so)
        p, i64, i32, dp = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_double)
        lib.llmdd_gather.argtypes = [p, p, p, p, i64, i64, i32, i32, i32, dp]
        lib.llmdd_cma.argtypes = [i32, p, ctypes.c_uint64, p, p, i64, i64, i32, i32, dp]
        lib.llmdd_gather.restype = lib.llmdd_cma.restype = i32
        self.lib = lib

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def gather(self, dst_addr: int, src_addr: int, doff: np.ndarray, soff: np.ndarray, block: int, threads: int,
               warmup: int, iters: int) -> List[float]:
        """Per-iteration seconds of the in-process copy of the request."""
        if self.lib is None:
            return self._gather_py(dst_addr, src_addr, doff, soff, block, warmup, iters)
        times = (ctypes.c_double * iters)()
        rc = self.lib.llmdd_gather(dst_addr, src_addr, doff.ctypes.data, soff.ctypes.data, len(doff), block,
                                   threads, warmup, iters, times)
        if rc:
            raise OSError(-rc, os.strerror(-rc))
        return list(times)

    @staticmethod
    def _gather_py(dst_addr, src_addr, doff, soff, block, warmup, iters) -> List[float]:
        pairs = [(dst_addr + int(d), src_addr + int(s)) for d, s in zip(doff, soff)]
        memmove, times = ctypes.memmove, []
        for it in range(warmup + iters):
            t0 = time.perf_counter()
            for d, s in pairs:
                memmove(d, s, block)
            if it >= warmup:
                times.append(time.perf_counter() - t0)
        return times

    def cma(self, pid: int, dst_addr: int, remote_addr: int, doff: np.ndarray, soff: np.ndarray, block: int,
            warmup: int, iters: int) -> List[float]:
        times = (ctypes.c_double * iters)()
        rc = self.lib.llmdd_cma(pid, dst_addr, remote_addr, doff.ctypes.data, soff.ctypes.data, len(doff), block,
                                warmup, iters, times)
        if rc:
            raise OSError(-rc, f"process_vm_readv: {os.strerror(-rc)}")
        return list(times)


# ---------------------------------------------------------------------------------------------
# memory views: numpy for host and the CPU device, torch for CUDA

def _is_cuda(dd: Any, placement: str) -> bool:
    return placement == "device" and dd.device_backend == "cuda"


def cache_bytes(cache: Any, cuda: bool, tensor: int = 0) -> Any:
    """A flat uint8 view of one tensor of a cache (numpy, or a CUDA torch tensor)."""
    if cuda:
        import torch
        return cache.torch(tensor).reshape(-1).view(torch.uint8)
    return cache.numpy(tensor).reshape(-1).view(np.uint8)


def case_desc(case: Case, placement: str) -> Any:
    """The CacheDesc of one side's cache for `case` (both sides allocate the same)."""
    import llm_datadist as ld
    shape = list(case.shape) if case.shape else [case.nslots, case.block]
    return ld.CacheDesc(case.tensors, shape, getattr(ld.DataType, case.dtype), _placement(placement))


def prefix_key(model_id: int) -> Any:
    """The prefix CacheKey of a pull_cache case (never consumed by a pull)."""
    import llm_datadist as ld
    return ld.CacheKey(PREFILL_ID, 2**64 - 1, prefix_id=model_id)


def to_host(view: Any) -> np.ndarray:
    return view.cpu().numpy() if hasattr(view, "cpu") else view


def fill_from(view: Any, pattern: np.ndarray) -> None:
    if hasattr(view, "copy_"):
        import torch
        view.copy_(torch.from_numpy(pattern).to(view.device))
        torch.cuda.synchronize()
    else:
        np.copyto(view, pattern)


def zero(view: Any) -> None:
    if hasattr(view, "zero_"):
        import torch
        view.zero_()
        torch.cuda.synchronize()
    else:
        view[...] = 0


def make_config(placements: Sequence[str], pool_bytes: int, listen: Optional[str], transport: str,
                device_backend: Optional[str], sync_kv_timeout_ms: int) -> Dict[str, str]:
    import llm_datadist as ld
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    pool = json.dumps({"memory_size": pool_bytes})      # just big enough for one pool-sized cache
    if "host" in placements:
        cfg.host_mem_pool_cfg = pool
    if "device" in placements:
        cfg.mem_pool_cfg = pool
    if listen:
        cfg.listen_ip_info = listen
    if device_backend:
        cfg.device_backend = device_backend
    cfg.sync_kv_timeout = sync_kv_timeout_ms
    opts = cfg.generate_options()
    if transport:
        # docs/transfer.md: "tcp" forces tcp, "ucx" forces ucx (UCX_TLS applies); "auto" (shm /
        # cuda_ipc on one host) also overrides an LLMDD_TRANSPORT left in the environment.
        opts["llmdd.Transport"] = transport if transport in ("tcp", "ucx") else "auto"
    return opts


def _placement(name: str) -> Any:
    import llm_datadist as ld
    return ld.Placement.HOST if name == "host" else ld.Placement.DEVICE


# ---------------------------------------------------------------------------------------------
# the prefill process (child): JSON lines on stdin/stdout

def prefill_main(argv: Sequence[str]) -> int:
    """Runs in the child: `python -c "...; bench_transfer.prefill_main(sys.argv[1:])" CONFIG_JSON`."""
    conf = json.loads(argv[0])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                      # anything else written to stdout goes to stderr

    def reply(**kw: Any) -> None:
        proto.write(json.dumps(kw) + "\n")

    import llm_datadist as ld
    try:
        dd = ld.LLMDataDist(ld.LLMRole.PROMPT, PREFILL_ID)
        dd.init(make_config(conf["placements"], conf.get("mem_bytes", conf["pool_bytes"]),
                            f"{conf.get('ip', '127.0.0.1')}:{conf['port']}",
                            conf["transport"],
                            conf["device_backend"], conf["sync_kv_timeout_ms"]))
        pattern = make_pattern(conf.get("pattern_bytes", conf["pool_bytes"]), conf["seed"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        reply(ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    cm = dd.cache_manager
    reply(ok=True, pid=os.getpid(), device_backend=dd.device_backend)
    cache, cache_op, cache_key = None, "", None
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            op = msg["op"]
            try:
                if op in ("alloc", "free") and cache is not None:
                    if cache_op == "pull_cache":
                        # A prefix key keeps its cache alive past deallocate_cache (upstream):
                        # unbind it too, or every pull_cache case leaks its cache into the next.
                        cm.remove_cache_key(cache_key)
                        cm.deallocate_cache(cache)
                    else:
                        cm.deallocate_blocks_cache(cache)
                    cache = None
                if op == "alloc":
                    placement = msg["placement"]
                    if "case" in msg:
                        case = Case(**msg["case"])
                    else:                  # bench_transfer.py's one-tensor cases
                        S = msg["block"]
                        case = Case("", 1, S, 0, 0, nslots=conf["pool_bytes"] // S)
                    desc = case_desc(case, placement)
                    cache_op = case.op
                    if case.op == "pull_cache":
                        cache_key = prefix_key(msg["model_id"])
                        cache = cm.allocate_cache(desc, [cache_key])
                    else:
                        cache = cm.allocate_blocks_cache(desc, ld.BlocksCacheKey(PREFILL_ID, msg["model_id"]))
                    t0 = time.perf_counter()
                    for t in range(case.tensors):
                        view = cache_bytes(cache, _is_cuda(dd, placement), t)
                        o = case.pattern_offset(t)
                        fill_from(view, pattern[o: o + (view.numel() if hasattr(view, "numel") else view.size)])
                        del view           # views pin pool memory: drop before the next deallocation
                    reply(ok=True, addr=cache.tensor_addrs[0], addrs=list(cache.tensor_addrs),
                          fill_s=time.perf_counter() - t0)
                elif op == "free":
                    reply(ok=True)
                elif op == "link_info":
                    fn = getattr(dd, "link_info", None)
                    reply(ok=True, info=fn(msg["cluster_id"]) if fn else None)
                elif op == "quit":
                    break
                else:
                    reply(ok=False, error=f"unknown op {op!r}")
            except Exception as exc:  # noqa: BLE001
                reply(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        dd.finalize()
    reply(ok=True, bye=True)
    return 0


class Prefill:
    """The parent's handle on a prefill child."""

    def __init__(self, conf: Dict[str, Any], env: Dict[str, str], timeout_s: float = 120.0,
                 wrap: Sequence[str] = ()) -> None:
        code = ("import sys; from llm_datadist._bench.transfer import prefill_main; "
                "sys.exit(prefill_main(sys.argv[1:]))")
        # wrap: an argv prefix that execs the child in place (`ip netns exec NAME`: --crossns)
        self.proc = subprocess.Popen([*wrap, sys.executable, "-c", code, json.dumps(conf)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        self._buf = b""
        hello = self._read(timeout_s)
        if not hello.get("ok"):
            self.close()
            raise RuntimeError(f"prefill process failed to start: {hello.get('error')}")
        self.pid = hello["pid"]
        self.device_backend = hello["device_backend"]

    def _read(self, timeout_s: float) -> Dict[str, Any]:
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"prefill process (pid {self.proc.pid}) did not answer in {timeout_s:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                rc = self.proc.wait(5)
                raise RuntimeError(f"prefill process (pid {self.proc.pid}) exited with code {rc}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, timeout_s: float = 120.0, **msg: Any) -> Dict[str, Any]:
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        out = self._read(timeout_s)
        if not out.get("ok"):
            raise RuntimeError(f"prefill {msg.get('op')}: {out.get('error')}")
        return out

    def close(self) -> int:
        if self.proc.poll() is None:
            try:
                self.call(op="quit", timeout_s=30)
            except (OSError, RuntimeError, TimeoutError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# the runner

class Bench:
    def __init__(self, args: argparse.Namespace, cases: Optional[List[Case]] = None) -> None:
        self.args = args
        if cases is None:
            self.pool = args.pool_mib * MiB
            self.cases = make_cases(args.cases, self.pool, args.iters, args.warmup)
        else:                                    # the suite's cases: each names its own pool layout
            self.cases = cases
            self.pool = max(c.pool_bytes for c in cases)
        self.pattern_bytes = max([self.pool if cases is None else 0] + [c.pattern_bytes for c in self.cases])
        # Each side's memory pool: the largest case's cache, plus page slack for multi-tensor caches.
        self.mem_bytes = self.pool + max((c.tensors for c in self.cases), default=1) * 64 * 1024 \
            if cases is not None else self.pool
        self.slots = {c.name: slots_for(c, None, args.slot_seed) for c in self.cases}
        self.placement_cases: Optional[Dict[str, List[str]]] = None   # placement -> case names (None: all)
        self.on_case: Optional[Any] = None       # called (transport, placement, case) after each case of a pass
        # where the prefill child runs: its address and an argv prefix (--crossns: another namespace)
        self.prefill_ip = "127.0.0.1"
        self.prefill_wrap: List[str] = []
        self.rows: List[Row] = []
        self.links: List[Dict[str, Any]] = []
        self.notes: List[str] = []
        self.errors = 0
        self.helper = Helper()
        if self.helper.note:
            self.notes.append(self.helper.note)
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        load = os.getloadavg()[0]
        if load > 0.5 * ncpu:
            self.notes.append(f"machine busy at start: load average {load:.1f} on {ncpu} CPUs; these numbers are "
                              f"not a quiet-machine record")
        t0 = time.perf_counter()
        self.pattern = make_pattern(self.pattern_bytes, args.seed)
        log(f"pattern: {human(self.pattern_bytes)} seeded {args.seed} in {time.perf_counter() - t0:.2f} s")
        for c in self.cases:
            if c.note:
                self.notes.append(f"case {c.name}: {c.note}")

    # -- bookkeeping ------------------------------------------------------------------------
    def _add(self, row: Row) -> Row:
        if row.error or row.verified is False:
            self.errors += 1
        self.rows.append(row)
        s = row.stats()
        what = f"{row.system}{'/' + row.transport if row.transport else ''} {row.placement} case {row.case}"
        if row.error:
            log(f"  {what}: ERROR {row.error}")
        else:
            ver = {True: "verified", False: f"VERIFY FAILED ({row.verify_detail})", None: "not checked"}[row.verified]
            log(f"  {what}: {s['GBps']:.3f} GB/s, median {s['median_us']:.1f} us, {ver}")
        return row

    def _check(self, row: Row, case: Case, dst_views: Any) -> None:
        """dst_views: one flat uint8 view per tensor of the case (or a single view)."""
        if not self.args.check:
            return
        remote, local = self.slots[case.name]
        views = dst_views if isinstance(dst_views, (list, tuple)) else [dst_views]
        row.verified, row.verify_detail = verify_case(case, self.pattern, [to_host(v) for v in views], remote, local)

    def _offsets(self, case: Case, slots: np.ndarray, bases: Optional[Sequence[int]] = None,
                 in_pattern: bool = False) -> np.ndarray:
        """Byte offsets of the case's blocks over every tensor; tensor t at bases[t] - bases[0]
        (default: tensors back to back, t * tensor_bytes; in_pattern: at case.pattern_offset(t))."""
        T = case.tensor_bytes

        def base(t: int) -> int:
            if bases:
                return int(bases[t]) - int(bases[0])
            return case.pattern_offset(t) if in_pattern else t * T
        return np.concatenate([slots * case.block + base(t) for t in range(case.tensors)]).astype(np.int64)

    # -- ceilings in this process -------------------------------------------------------------
    def local_ceilings(self) -> None:
        if not ({"memcpy", "memcpy_mt"} & set(self.args.ceilings)):
            return
        log("ceilings: memcpy in this process")
        dst = np.zeros(self.pool, dtype=np.uint8)
        for case in self.cases:
            remote, local = self.slots[case.name]
            soff, doff = self._offsets(case, remote, in_pattern=True), self._offsets(case, local)
            T = case.tensor_bytes
            views = [dst[t * T:(t + 1) * T] for t in range(case.tensors)]
            for system, threads in (("memcpy", 1), ("memcpy_mt", self.args.threads)):
                if system not in self.args.ceilings or (system == "memcpy_mt" and (case.nbytes < 1 * MiB
                                                                                   or self.helper.lib is None)):
                    continue
                how = ("C memcpy loop" if self.helper.lib is not None else "Python ctypes.memmove loop") + \
                      (f", {threads} threads" if threads > 1 else ", 1 thread")
                row = Row(system, case.name, "host", op=how, bytes=case.nbytes, nblocks=case.nblocks,
                          block_bytes=case.block, warmup=case.warmup)
                dst[...] = 0
                try:
                    times = self.helper.gather(dst.ctypes.data, self.pattern.ctypes.data, doff, soff, case.block,
                                               threads, case.warmup, case.iters)
                    row.times_us = [t * 1e6 for t in times]
                    self._check(row, case, views)
                except OSError as exc:
                    row.error = str(exc)
                self._add(row)
        del dst

    def cuda_ceilings(self) -> None:
        """Copies on the GPU (torch), for device placement on CUDA: device-to-device (the request's
        blocks: one copy for one block, a 2-pass gather for many), and host-to-device /
        device-to-host of the request's bytes as one contiguous copy from / to pinned memory."""
        try:
            import torch
        except ImportError:
            self.notes.append("cuda ceilings skipped: torch is not installed")
            return
        if not torch.cuda.is_available():
            self.notes.append("cuda ceilings skipped: this torch build sees no CUDA device")
            return
        log("ceilings: CUDA device-to-device, host-to-device, device-to-host (torch)")
        dev = torch.device("cuda", 0)
        pattern = torch.from_numpy(self.pattern).to(dev)
        src = torch.empty(self.pool, dtype=torch.uint8, device=dev)
        dst = torch.zeros_like(src)
        pinned = torch.empty(self.pool, dtype=torch.uint8).pin_memory()
        host_dst = torch.zeros(self.pool, dtype=torch.uint8).pin_memory()

        def timed(fn: Any, case: Case) -> List[float]:
            times = []
            for it in range(case.warmup + case.iters):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                if it >= case.warmup:
                    times.append((time.perf_counter() - t0) * 1e6)
            return times

        for case in self.cases:
            remote, local = self.slots[case.name]
            S, T = case.block, case.tensor_bytes
            n = case.tensors * case.nslots
            for t in range(case.tensors):           # the case's source layout: tensors back to back
                o = case.pattern_offset(t)
                src[t * T:(t + 1) * T].copy_(pattern[o:o + T])
            pinned[:case.pool_bytes].copy_(src[:case.pool_bytes])
            s2, d2 = src[: n * S].view(-1, S), dst[: n * S].view(-1, S)
            gidx = lambda slots: torch.from_numpy(np.concatenate(      # noqa: E731
                [t * case.nslots + slots for t in range(case.tensors)])).to(dev)
            ri, li = gidx(remote), gidx(local)
            if case.nblocks * case.tensors == 1:
                system, op = "cuda_d2d", "torch copy_ (cudaMemcpy device-to-device)"
                fn = lambda: d2[int(local[0])].copy_(s2[int(remote[0])])  # noqa: E731
            else:
                system, op = "cuda_gather2", "torch index_select + index_copy_ (2 passes)"
                fn = lambda: d2.index_copy_(0, li, s2.index_select(0, ri))  # noqa: E731
            row = Row(system, case.name, "device", op=op, bytes=case.nbytes, nblocks=case.nblocks, block_bytes=S,
                      warmup=case.warmup)
            dst.zero_()
            row.times_us = timed(fn, case)
            self._check(row, case, [dst[t * T:(t + 1) * T] for t in range(case.tensors)])
            self._add(row)
            nb = case.nbytes
            for system, op, fn, got, want in (
                    ("cuda_h2d", "torch copy_ pinned host -> device, contiguous",
                     lambda: dst[:nb].copy_(pinned[:nb], non_blocking=True), lambda: dst[:nb], pinned[:nb]),
                    ("cuda_d2h", "torch copy_ device -> pinned host, contiguous",
                     lambda: host_dst[:nb].copy_(src[:nb], non_blocking=True), lambda: host_dst[:nb], pinned[:nb])):
                row = Row(system, case.name, "device", op=op, bytes=nb, nblocks=case.nblocks, block_bytes=S,
                          warmup=case.warmup)
                dst.zero_()
                host_dst.zero_()
                row.times_us = timed(fn, case)
                if self.args.check:
                    row.verified = bool(torch.equal(got().cpu(), want))
                    row.verify_detail = "" if row.verified else "bytes differ"
                self._add(row)
        del pattern, src, dst, pinned, host_dst
        torch.cuda.empty_cache()

    # -- one pass: a prefill child, optionally a link, every placement and case -----------------
    def run_pass(self, transport: Optional[str], do_cma: bool) -> None:
        import llm_datadist as ld
        args = self.args
        env = dict(os.environ)
        if transport != "tcp":
            env.pop("LLMDD_TRANSPORT", None)
        label = transport or "no transfer (ceilings only)"
        for attempt in range(3):         # a free port can be taken before the child listens on it
            port = free_port()
            conf = {"placements": args.placement, "pool_bytes": self.pool, "mem_bytes": self.mem_bytes, "port": port,
                    "pattern_bytes": self.pattern_bytes,
                    "seed": args.seed,
                    "transport": transport or "", "device_backend": args.device_backend,
                    "sync_kv_timeout_ms": args.sync_kv_timeout_ms, "ip": self.prefill_ip}
            log(f"pass: {label}: starting the prefill process (listening on {self.prefill_ip}:{port})")
            try:
                prefill = Prefill(conf, env, wrap=self.prefill_wrap)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        dd, link = None, None
        try:
            dd = ld.LLMDataDist(ld.LLMRole.DECODER, DECODE_ID)
            dd.init(make_config(args.placement, self.mem_bytes, None, transport or "", args.device_backend,
                                args.sync_kv_timeout_ms))
            cm = dd.cache_manager
            if transport:
                link = self._link(dd, port, transport)
            model_id = 0
            for placement in args.placement:
                cuda = _is_cuda(dd, placement)
                for case in self.cases:
                    if self.placement_cases is not None and case.name not in self.placement_cases.get(placement, ()):
                        continue
                    model_id += 1
                    remote, local = self.slots[case.name]
                    prefill_cache = prefill.call(op="alloc", placement=placement, case=asdict(case), model_id=model_id)
                    desc = case_desc(case, placement)
                    if case.op == "pull_cache":
                        dst, key = cm.allocate_cache(desc), prefix_key(model_id)
                    else:
                        dst, key = cm.allocate_blocks_cache(desc), ld.BlocksCacheKey(PREFILL_ID, model_id)
                    views = [cache_bytes(dst, cuda, t) for t in range(case.tensors)]
                    try:
                        if do_cma and "cma" in args.ceilings and not cuda and self.helper.lib is not None:
                            self._cma(case, placement, prefill.proc.pid, prefill_cache["addrs"], dst, views)
                        if link is not None and not link.get("error"):
                            self._pulls(cm, case, placement, key, dst, views, remote, local, link)
                    finally:
                        del views
                        if case.op == "pull_cache":
                            cm.deallocate_cache(dst)
                        else:
                            cm.deallocate_blocks_cache(dst)
                    prefill.call(op="free")
                    if self.on_case is not None:
                        self.on_case(transport, placement, case)
            if link is not None and not link.get("error"):
                link["decode_link_info"] = self._link_info(dd)
                link["prefill_link_info"] = prefill.call(op="link_info", cluster_id=DECODE_ID).get("info")
                self._check_counters(link)
                self._unlink(dd, port, link)
        finally:
            if dd is not None:
                dd.finalize()
            rc = prefill.close()
            if rc not in (0, None):
                self.notes.append(f"prefill process of pass {label!r} exited with code {rc}")
                self.errors += 1

    def _cluster(self, port: int) -> Any:
        import llm_datadist as ld
        ci = ld.LLMClusterInfo()
        ci.remote_cluster_id = PREFILL_ID
        ci.append_remote_ip_info(self.prefill_ip, port)
        return ci

    def _link_info(self, dd: Any) -> Optional[Dict[str, Any]]:
        fn = getattr(dd, "link_info", None)
        return dict(fn(PREFILL_ID)) if fn else None

    def _link(self, dd: Any, port: int, transport: str) -> Dict[str, Any]:
        import llm_datadist as ld
        link: Dict[str, Any] = {"requested": transport}
        t0 = time.perf_counter()
        try:
            ret, rets = dd.link_clusters([self._cluster(port)], timeout=self.args.link_timeout_ms)
            link["link_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
            if ret != ld.LLMStatusCode.LLM_SUCCESS:
                link["error"] = f"link_clusters returned {ret!s} {[str(r) for r in rets]}"
        except ld.LLMException as exc:
            link["error"] = f"link_clusters raised {exc.status_code!s}: {exc}"
        if link.get("error"):
            self.errors += 1
            self.notes.append(f"{transport}: no link, no pulls: {link['error']}")
            log(f"  link ({transport}): {link['error']}")
        else:
            info = self._link_info(dd) or {}
            link["transport"] = info.get("transport", "?")
            link["reason"] = info.get("reason", "")
            link["cuda_ipc"] = bool(info.get("cuda_ipc")) or link["transport"] == "cuda_ipc"
            expected = {"tcp": ("tcp",), "shm": ("shm", "cuda_ipc")}.get(transport, (transport,))
            if link["transport"] not in expected:
                self.notes.append(f"asked for {transport}, the link uses {link['transport']} ({link['reason']}): "
                                  f"its rows are labelled {link['transport']}")
            log(f"  linked in {link['link_ms']:.1f} ms over {link['transport']} ({link['reason']})")
        self.links.append(link)
        return link

    def _unlink(self, dd: Any, port: int, link: Dict[str, Any]) -> None:
        import llm_datadist as ld
        t0 = time.perf_counter()
        try:
            ret, rets = dd.unlink_clusters([self._cluster(port)], timeout=self.args.link_timeout_ms)
            if ret != ld.LLMStatusCode.LLM_SUCCESS:
                link["unlink_error"] = f"unlink_clusters returned {ret!s} {[str(r) for r in rets]}"
                self.errors += 1
        except ld.LLMException as exc:
            link["unlink_error"] = f"unlink_clusters raised {exc.status_code!s}: {exc}"
            self.errors += 1
        link["unlink_ms"] = round((time.perf_counter() - t0) * 1e3, 3)

    def _check_counters(self, link: Dict[str, Any]) -> None:
        """link_info's bytes_pulled / pulls against what this pass pulled (a warning only)."""
        info = link.get("decode_link_info") or {}
        rows = [r for r in self.rows if r.system == "llm_datadist" and r.pass_index == len(self.links)]
        pulls = sum(r.warmup + len(r.times_us) for r in rows if not r.error)
        nbytes = sum((r.warmup + len(r.times_us)) * r.bytes for r in rows if not r.error)
        link["expected_counters"] = {"pulls": pulls, "bytes_pulled": nbytes}
        for k, v in (("pulls", pulls), ("bytes_pulled", nbytes)):
            if k in info and info[k] != v:
                self.notes.append(f"link_info[{k!r}] = {info[k]} after the {link.get('transport')} pass, "
                                  f"expected {v}")

    def _cma(self, case: Case, placement: str, pid: int, remote_addrs: Sequence[int], dst: Any,
             views: List[Any]) -> None:
        remote, local = self.slots[case.name]
        row = Row("cma", case.name, placement, op="process_vm_readv from the prefill process, 1 thread",
                  bytes=case.nbytes, nblocks=case.nblocks, block_bytes=case.block, warmup=case.warmup)
        for v in views:
            zero(v)
        try:
            times = self.helper.cma(pid, dst.tensor_addrs[0], remote_addrs[0],
                                    self._offsets(case, local, dst.tensor_addrs),
                                    self._offsets(case, remote, remote_addrs), case.block, case.warmup, case.iters)
            row.times_us = [t * 1e6 for t in times]
            self._check(row, case, views)
        except OSError as exc:           # e.g. EPERM where ptrace is restricted: a missing ceiling, not an error
            self.args.ceilings = [c for c in self.args.ceilings if c != "cma"]
            self.notes.append(f"cma ceiling skipped: {exc}")
            log(f"  cma: skipped ({exc})")
            return
        self._add(row)

    def _pulls(self, cm: Any, case: Case, placement: str, key: Any, dst: Any, views: List[Any], remote: np.ndarray,
               local: np.ndarray, link: Dict[str, Any]) -> None:
        import llm_datadist as ld
        # The link names shm or tcp; CUDA device pools on an shm link go over CUDA IPC.
        transport = "cuda_ipc" if (link.get("cuda_ipc") and placement == "device" and link["transport"] != "tcp"
                                   and hasattr(views[0], "device")) else link["transport"]
        row = Row("llm_datadist", case.name, placement, transport=transport, op=case.op,
                  bytes=case.nbytes, nblocks=case.nblocks, block_bytes=case.block, warmup=case.warmup,
                  pass_index=len(self.links))
        src_blocks, dst_blocks = remote.tolist(), local.tolist()
        tnpl = 2 if case.tensors % 2 == 0 else 1     # K/V pairs per layer where the layout has them
        for v in views:
            zero(v)
        times = []
        gc_was = gc.isenabled()
        gc.disable()
        try:
            perf = time.perf_counter
            if case.op == "pull_cache":
                pull = lambda: cm.pull_cache(key, dst, 0, tensor_num_per_layer=tnpl)  # noqa: E731
            else:
                pull = lambda: cm.pull_blocks(key, dst, src_blocks, dst_blocks, tensor_num_per_layer=tnpl)  # noqa: E731
            for it in range(case.warmup + case.iters):
                t0 = perf()
                pull()
                t = perf() - t0
                if it >= case.warmup:
                    times.append(t)
        except ld.LLMException as exc:
            row.error = f"{case.op} raised {exc.status_code!s} at iteration {len(times)}: {exc}"
        finally:
            if gc_was:
                gc.enable()
        row.times_us = [t * 1e6 for t in times]
        if not row.error:
            self._check(row, case, views)
        self._add(row)

    # -- report ---------------------------------------------------------------------------------
    def _row(self, system: str, case: str, placement: str = "host", transport: str = "") -> Optional[Row]:
        for r in self.rows:
            if (r.system, r.case, r.placement) == (system, case, placement) and r.transport == transport \
                    and not r.error and r.times_us:
                return r
        return None

    def fractions(self) -> None:
        for r in self.rows:
            if r.system != "llm_datadist" or r.error or not r.times_us:
                continue
            fr = {}
            for ceiling in ("memcpy", "memcpy_mt", "cma", "cuda_d2d", "cuda_gather2"):
                c = self._row(ceiling, r.case, r.placement) or (self._row(ceiling, r.case, "host")
                                                                if ceiling.startswith("memcpy") else None)
                if c is not None:
                    fr[ceiling] = round(r.stats()["GBps"] / c.stats()["GBps"], 3)
            r.frac_of = fr

    def acceptance(self) -> List[Dict[str, Any]]:
        """Issue 3's acceptance ratios (and issue 5's (a) vs NIXL), from this run's rows."""
        out = []

        def add(name: str, value: Optional[float], threshold: float, higher: bool, unit: str, cases: Sequence[str],
                issue: int) -> None:
            comparable = all(c.reference for c in self.cases if c.name in cases)
            ok = None if value is None else (value >= threshold if higher else value <= threshold)
            out.append({"name": name, "issue": issue, "value": None if value is None else round(value, 3),
                        "threshold": threshold, "rule": (">=" if higher else "<=") + f" {threshold}{unit}",
                        "pass": ok, "comparable": comparable})

        def gbps(system: str, case: str, transport: str = "") -> Optional[float]:
            r = self._row(system, case, "host", transport)
            return r.stats()["GBps"] if r else None

        def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
            return None if a is None or not b else a / b

        shm_c, shm_a, tcp_c = gbps("llm_datadist", "c", "shm"), gbps("llm_datadist", "a", "shm"), \
            gbps("llm_datadist", "c", "tcp")
        add("shm (c) / memcpy gather (c)", ratio(shm_c, gbps("memcpy", "c")), 0.6, True, "x", "c", 3)
        add("shm (c) / NIXL (c) 1.36 GB/s", ratio(shm_c, PEER_BASELINE["nixl"]["c"]), 3.0, True, "x", "c", 3)
        add("shm (a) / memcpy 1 thread (a)", ratio(shm_a, gbps("memcpy", "a")), 0.8, True, "x", "a", 3)
        add("tcp (c) / Mooncake (c) 0.56 GB/s", ratio(tcp_c, PEER_BASELINE["mooncake"]["c"]), 1.0, True, "x", "c", 3)
        d = self._row("llm_datadist", "d", "host", "shm")
        add("shm (d) 4 KiB median latency", d.stats()["median_us"] if d else None, 20.0, False, " us", "d", 3)
        add("shm (a) / NIXL (a) 3.22 GB/s", ratio(shm_a, PEER_BASELINE["nixl"]["a"]), 2.0, True, "x", "a", 5)
        cuda_c = next((r for r in self.rows if r.system == "llm_datadist" and r.case == "c"
                       and r.transport == "cuda_ipc" and not r.error and r.times_us), None)
        d2d = next((r for r in self.rows if r.system == "cuda_d2d" and not r.error), None)
        if cuda_c is not None or d2d is not None:
            add("cuda_ipc (c) / device-to-device copy", ratio(cuda_c.stats()["GBps"] if cuda_c else None,
                                                            d2d.stats()["GBps"] if d2d else None), 0.5, True, "x",
                "c", 3)
        return out

    def table(self, accept: List[Dict[str, Any]]) -> str:
        t = Table([Column("case", 13, "<"), Column("system", 22, "<"), Column("place", 6, "<"),
                   Column("bytes/req", 10), Column("GB/s", 8), Column("median us", 10), Column("p99 us", 10),
                   Column("x ceil", 9), Column("check", 6)])
        lines = t.header()
        order = {c.name: i for i, c in enumerate(self.cases)}
        places = {p: i for i, p in enumerate(self.args.placement)}
        for r in sorted(self.rows, key=lambda r: (order.get(r.case, 99), r.system != "llm_datadist",
                                                   places.get(r.placement, 9), r.system, r.transport)):
            name = f"{r.case} {r.nblocks}x{human(r.block_bytes).replace(' ', '')}"
            system = f"llm_datadist/{r.transport}" if r.system == "llm_datadist" else r.system
            if r.error:
                lines.append(t.row_then_text([name, system, r.placement], f"ERROR {r.error[:80]}"))
                continue
            s = r.stats()
            frac = next((r.frac_of[c] for c in ("cuda_d2d", "cuda_gather2", "memcpy") if c in r.frac_of), None)
            check = {True: "ok", False: "FAIL", None: "-"}[r.verified]
            lines.append(t.row(name, system, r.placement, human(r.bytes), fmt(s["GBps"], ".3f"),
                               f"{s['median_us']:.1f}", f"{s['p99_us']:.1f}", fmt(frac, ".2f"), check))
        lines.append("x ceil: GB/s over that of the same request done by memcpy in one process, 1 thread "
                     "(cuda_d2d / cuda_gather2 for CUDA device rows)")
        if accept:
            lines += ["", "acceptance (issue 3; issue 5 where marked), this run:"]
            for a in accept:
                verdict = "n/a " if a["pass"] is None else ("PASS" if a["pass"] else "FAIL")
                value = "-" if a["value"] is None else f"{a['value']:.3f}"
                tag = "" if a["comparable"] else "  (cases scaled: not the reference numbers)"
                issue = " [issue 5]" if a["issue"] == 5 else ""
                lines.append(f"  {verdict} {a['name']:<38} {value:>9} (need {a['rule']}){issue}{tag}")
        if any(not link.get("error") for link in self.links):
            lines.append("")
        for link in self.links:
            if not link.get("error"):
                lines.append(f"link {link['requested']}: {link['transport']} ({link['reason']}), linked in "
                             f"{link['link_ms']:.1f} ms, unlinked in {link.get('unlink_ms', float('nan')):.1f} ms")
        if self.notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


def machine_info(where: Optional[str] = None) -> Dict[str, Any]:
    """Machine and versions; git_commit of `where` (default: the working directory) when it is a clone."""
    import llm_datadist as ld
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    info = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(), "cpu_model": cpu, "mem_total_bytes": mem,
        "kernel": platform.release(), "platform": platform.platform(), "machine": platform.machine(),
        "python": platform.python_version(), "numpy": np.__version__, "llm_datadist": ld.__version__,
        "loadavg_at_start": list(os.getloadavg()),
        "cuda": {k: v for k, v in ld._core.cuda_info().items() if k in ("available", "reason", "driver_version",
                                                                       "device_names")},
    }
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].__version__
    try:
        import subprocess as sp
        rev = sp.run(["git", "-C", where or os.getcwd(), "rev-parse", "HEAD"],
                     capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            info["git_commit"] = rev.stdout.strip()
    except (OSError, sp.TimeoutExpired):
        pass
    return info


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transport", default="shm,tcp",
                    help="comma list of shm (same host: shm for host pools, cuda_ipc for CUDA pools), tcp, "
                         "ucx (forced; UCX_TLS applies, e.g. UCX_TLS=tcp UCX_NET_DEVICES=lo), or none "
                         "(ceilings only) [shm,tcp]")
    ap.add_argument("--placement", default="host", help="comma list of host, device [host]")
    ap.add_argument("--op", default="pull_blocks", choices=["pull_blocks"],
                    help="transfer operation (READ: the decode pulls) [pull_blocks]")
    ap.add_argument("--cases", default="a,b,c,d", help="a,b,c,d and/or NxSIZE such as 4096x16K [a,b,c,d]")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per case (default: the case's)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up iterations per case (default: the case's)")
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                    help="verify every byte after every case [--check]")
    ap.add_argument("--ceilings", default="memcpy,memcpy_mt,cma",
                    help="comma list of memcpy, memcpy_mt, cma (cuda_d2d is automatic), or none")
    ap.add_argument("--threads", type=int, default=min(8, max(2, len(os.sched_getaffinity(0)))),
                    help="threads of the memcpy_mt ceiling [nproc, 2..8]")
    ap.add_argument("--pool-mib", type=int, default=256, help="pool size per side in MiB [256: the reference]")
    ap.add_argument("--seed", type=int, default=PATTERN_SEED, help="pattern seed [1234]")
    ap.add_argument("--slot-seed", type=int, default=SLOT_SEED, help="slot placement seed [7]")
    ap.add_argument("--device-backend", choices=["auto", "cuda", "cpu"], default=None)
    ap.add_argument("--sync-kv-timeout-ms", type=int, default=30000, help="pull deadline (sync_kv_timeout) [30000]")
    ap.add_argument("--link-timeout-ms", type=int, default=10000, help="link_clusters timeout [10000]")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    args = ap.parse_args(argv)
    args.transport = [t for t in args.transport.split(",") if t and t != "none"]
    bad = [t for t in args.transport if t not in ("shm", "tcp", "cuda_ipc", "ucx")]
    args.placement = [p for p in args.placement.split(",") if p]
    bad += [p for p in args.placement if p not in ("host", "device")]
    args.ceilings = [c for c in args.ceilings.split(",") if c and c != "none"]
    bad += [c for c in args.ceilings if c not in ("memcpy", "memcpy_mt", "cma")]
    if bad or not args.placement:
        ap.error(f"unknown value(s) {bad}" if bad else "--placement is empty")
    if args.pool_mib <= 0:
        ap.error("--pool-mib must be > 0")
    return args


def main(argv: Optional[Sequence[str]] = None, script: Optional[str] = None) -> int:
    """bench_transfer.py's entry point; `script` is the path the command line names."""
    args = parse_args(argv)
    started = time.time()
    command = " ".join(["python", os.path.relpath(os.path.abspath(script or __file__))] + list(sys.argv[1:] if argv is None
                                                                                     else argv))
    bench = Bench(args)
    try:
        bench.local_ceilings()
        if "device" in args.placement:
            import llm_datadist as ld
            if ld._core.cuda_info().get("available") and args.device_backend != "cpu":
                bench.cuda_ceilings()
        for i, transport in enumerate(args.transport or [None]):
            try:
                bench.run_pass(transport, do_cma=(i == 0))
            except Exception as exc:  # noqa: BLE001 - one pass failing must not lose the others' results
                bench.errors += 1
                bench.notes.append(f"pass {transport or 'ceilings'} stopped: {type(exc).__name__}: {exc}")
                log(f"pass {transport} stopped: {type(exc).__name__}: {exc}")
    finally:
        bench.helper.close()
    bench.fractions()
    accept = bench.acceptance() if args.transport else []
    print(bench.table(accept))
    elapsed = time.time() - started
    print(f"\n{len(bench.rows)} rows in {elapsed:.1f} s; "
          + ("every byte verified" if args.check and not bench.errors else
             (f"{bench.errors} error(s)" if bench.errors else "bytes not checked (--no-check)")))
    if args.out:
        record = {
            "schema": SCHEMA, "command": command, "argv": sys.argv if argv is None else ["bench_transfer.py", *argv],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "elapsed_s": round(elapsed, 2),
            "machine": machine_info(os.path.dirname(os.path.abspath(script or __file__))),
            "config": {"pool_bytes": bench.pool, "seed": args.seed, "slot_seed": args.slot_seed,
                       "transports": args.transport, "placements": args.placement, "op": args.op,
                       "check": args.check, "threads": args.threads, "ceilings": args.ceilings,
                       "sync_kv_timeout_ms": args.sync_kv_timeout_ms,
                       "cases": [asdict(c) | {"bytes": c.nbytes} for c in bench.cases],
                       "timing": "llm_datadist: perf_counter around each pull_blocks call (API included); "
                                 "ceilings: clock_gettime inside the C helper"},
            "peer_baseline": PEER_BASELINE, "links": bench.links,
            "rows": [r.to_json() for r in bench.rows],
            "acceptance": accept, "notes": bench.notes, "errors": bench.errors,
            "loadavg_at_end": list(os.getloadavg()),
        }
        write_record(args.out, record, indent=1)
    return 0 if bench.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
