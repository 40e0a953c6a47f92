# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist bench`: how fast is it here, against what this machine can do, and against NIXL
and Mooncake, in one command.

What runs (every pull between two processes on this host, a prefill child owning the source):
  reference   (a) 1 x 256 MiB, (b) 1024 x 64 KiB, (c) 4096 x 16 KiB, (d) 1 x 4 KiB latency
              (../shared/reference/peer_baseline.md; random distinct slots of a 256 MiB pool);
              beside (d), the same 4 KiB pull as a new user's script does it (d_strided: fresh
              processes, a 1024 x 4 KiB cache allocated after a 256 MiB one, src [i % 1024],
              dst [(i * 7) % 1024], no warm-up; _bench/latency.py), so its gap to (d) shows
  sweep       block size 4 KiB .. 4 MiB at 64 MiB per request (16 and 64 KiB are (c) and (b))
  batch       16 KiB blocks, 1 / 16 / 256 / 4096 (= (c)) per request
  model       a Llama-3-8B-like paged layout: 32 layers x K/V = 64 tensors of [blocks, 16
              tokens, 8 KV heads, 128 dims] bf16 = 32 KiB per block per tensor (2 KiB per token);
              pull_blocks of one request's block table: 2k tokens = 128 blocks (256 MiB) out of a
              512-block cache, 32k tokens = 2048 blocks (4 GiB: every block of a 2048-block cache,
              in random order; host placement only, for memory)
  cache       pull_cache (a prefix CacheKey, a contiguous cache): 1 x 256 MiB, 1 x 4 KiB, and
              the 2k-token request as 64 tensors x 4 MiB
on each transport (shm, tcp; on a GPU, device pools on the shm link go over cuda_ipc) and each
placement (host; device: CUDA memory on a GPU, else the CPU device).  Warm-up then timed
iterations per case; median and p99; every byte of the destination checked after each case.

Ceilings, same run, same blocks: memcpy 1 thread and N threads in this process, CMA
(process_vm_readv from the prefill process); on a GPU also device-to-device, host-to-device and
device-to-host copies (torch).  Each of our results is also given as a fraction of its ceiling.

Also measured: link set-up (link_clusters / unlink_clusters, repeated), registration (an init
with a 256 MiB pool; 4096 separate 16 KiB user regions each registered with
register_blocks_cache), metadata bytes per link (every byte of the handshake, counted by a
recording TCP proxy between the two processes), peer-failure detection (killed and frozen
prefill, as benchmarks/bench_failures.py).

Peers: NIXL (UCX default, and UCX_TLS=tcp) and Mooncake (tcp) on the same host cases, when
importable by the Python that runs them (--peer-python), with ours/peer ratios.  No peer row is
ever taken from anywhere but this run; the recorded baseline is printed separately, labelled.

Output: a progress line on stderr (tqdm's bar when installed), a table, JSON (--out; machine,
versions, command line, every timing) and a PNG plot of GB/s against block size next to the JSON
(or --png), drawn by matplotlib when installed (the `bench` extra: pip install
"llm-datadist[bench]"; without it the run says so and writes no PNG).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import write_record
from .report import Column, Progress, Series, Table, fmt, line_plot, quantiles

SCHEMA = "llm_datadist.bench/1"
KiB, MiB = 1 << 10, 1 << 20
REF_POOL = 256 * MiB
SWEEP = ["sw_4K", "c", "b", "sw_256K", "sw_1M", "sw_4M"]          # block size 4 KiB .. 4 MiB
SYSTEM_LABEL = {"nixl": "NIXL (UCX)", "nixl_tcp": "NIXL (UCX tcp)", "mooncake_tcp": "Mooncake tcp"}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true",
                    help="a ~1 minute subset at tiny sizes (the smoke test's run); not comparable numbers")
    ap.add_argument("--transport", default="shm,tcp", help="comma list of shm, tcp (or none) [shm,tcp]")
    ap.add_argument("--placement", default="host,device", help="comma list of host, device [host,device]")
    ap.add_argument("--groups", default="reference,sweep,batch,model,cache",
                    help="case groups to run [reference,sweep,batch,model,cache]")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per case (default: the case's)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up iterations per case (default: the case's)")
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                    help="verify every byte after every case [--check]")
    ap.add_argument("--ceilings", default="memcpy,memcpy_mt,cma", help="memcpy, memcpy_mt, cma, or none")
    ap.add_argument("--threads", type=int, default=min(8, max(2, len(os.sched_getaffinity(0)))),
                    help="threads of the memcpy_mt ceiling [nproc, 2..8]")
    ap.add_argument("--extras", default="link,registration,metadata,failures",
                    help="also measure: link, registration, metadata, failures (or none)")
    ap.add_argument("--peers", default="auto",
                    help="auto (those importable), none, or a comma list of nixl, nixl_tcp, mooncake_tcp")
    ap.add_argument("--peer-python", default=sys.executable,
                    help="the Python that runs the peers (e.g. a venv with nixl-cu13) [this one]")
    ap.add_argument("--device-backend", choices=["auto", "cuda", "cpu"], default=None)
    ap.add_argument("--seed", type=int, default=1234, help="pattern seed [1234]")
    ap.add_argument("--slot-seed", type=int, default=7, help="slot placement seed [7]")
    ap.add_argument("--sync-kv-timeout-ms", type=int, default=30000, help="pull deadline [30000]")
    ap.add_argument("--link-timeout-ms", type=int, default=10000, help="link_clusters timeout [10000]")
    ap.add_argument("--crossns", action="store_true",
                    help="also (a)-(d) and Llama-8B 2k between two network namespaces over a veth: ours (tcp, "
                         "ucx where available), NIXL and Mooncake (root; crossns.py)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON record here (and the PNG beside it)")
    ap.add_argument("--png", type=Path, default=None, help="the plot's path [--out with .png]")


# ---------------------------------------------------------------------------------------------
# cases

def build_cases(quick: bool, groups: Sequence[str]) -> List[Any]:
    from .transfer import Case

    def blocks(name, group, nblocks, block, iters, warmup, pool=REF_POOL, label="", reference=False):
        return Case(name, nblocks, block, iters, warmup, reference=reference, nslots=pool // block, group=group,
                    label=label or f"{nblocks} x {block // KiB} KiB" if block < MiB else
                    label or f"{nblocks} x {block // MiB} MiB")

    def model(name, group, tokens, nslots, iters, warmup, op="pull_blocks"):
        # [blocks, 16 tokens, 8 KV heads, 128 dims] bf16: 16 * 8 * 128 * 2 = 32 KiB per block per tensor
        if op == "pull_cache":            # one contiguous slot of `tokens` tokens per tensor
            return Case(name, 1, tokens * 8 * 128 * 2, iters, warmup, reference=False, tensors=64, nslots=1, op=op,
                        shape=[1, tokens, 8, 128], dtype="DT_BF16", group=group,
                        label=f"Llama-8B {tokens // 1024}k tok, 64 x {tokens * 2 // 1024} MiB (pull_cache)")
        return Case(name, tokens // 16, 32 * KiB, iters, warmup, reference=False, tensors=64, nslots=nslots,
                    shape=[nslots, 16, 8, 128], dtype="DT_BF16", group=group,
                    label=(f"Llama-8B {tokens // 1024}k tok: {tokens // 16} blk x 64 x 32K" if tokens >= 1024 else
                           f"Llama-8B {tokens} tok: {tokens // 16} blk x 64 x 32K"))

    if quick:
        pool = 8 * MiB
        cases = [
            blocks("a", "reference", 1, pool, 3, 1, pool, "(a) scaled: 1 x 8 MiB"),
            blocks("b", "reference", 32, 64 * KiB, 3, 1, pool, "(b) scaled: 32 x 64 KiB"),
            blocks("c", "reference", 128, 16 * KiB, 3, 1, pool, "(c) scaled: 128 x 16 KiB"),
            blocks("d", "reference", 1, 4 * KiB, 20, 2, pool, "(d) 1 x 4 KiB latency"),
            blocks("sw_4K", "sweep", 512, 4 * KiB, 3, 1, pool), blocks("sw_256K", "sweep", 8, 256 * KiB, 3, 1, pool),
            blocks("sw_1M", "sweep", 2, MiB, 3, 1, pool), blocks("sw_4M", "sweep", 1, 4 * MiB, 3, 1, pool),
            blocks("bt_16x16K", "batch", 16, 16 * KiB, 3, 1, pool),
            model("llama8b_256t", "model", 256, 32, 3, 1),
            Case("cache_4K", 1, 4 * KiB, 10, 1, reference=False, nslots=1, op="pull_cache", group="cache",
                 label="pull_cache 1 x 4 KiB"),
        ]
    else:
        cases = [
            blocks("a", "reference", 1, REF_POOL, 10, 2, label="(a) 1 x 256 MiB", reference=True),
            blocks("b", "reference", 1024, 64 * KiB, 20, 2, label="(b) 1024 x 64 KiB", reference=True),
            blocks("c", "reference", 4096, 16 * KiB, 20, 2, label="(c) 4096 x 16 KiB", reference=True),
            blocks("d", "reference", 1, 4 * KiB, 1000, 50, label="(d) 1 x 4 KiB latency", reference=True),
            blocks("sw_4K", "sweep", 16384, 4 * KiB, 20, 2), blocks("sw_256K", "sweep", 256, 256 * KiB, 20, 2),
            blocks("sw_1M", "sweep", 64, MiB, 20, 2), blocks("sw_4M", "sweep", 16, 4 * MiB, 20, 2),
            blocks("bt_1x16K", "batch", 1, 16 * KiB, 500, 50), blocks("bt_16x16K", "batch", 16, 16 * KiB, 200, 20),
            blocks("bt_256x16K", "batch", 256, 16 * KiB, 50, 5),
            model("llama8b_2k", "model", 2048, 512, 20, 2), model("llama8b_32k", "model", 32768, 2048, 5, 1),
            Case("cache_256M", 1, REF_POOL, 10, 2, reference=False, nslots=1, op="pull_cache", group="cache",
                 label="pull_cache 1 x 256 MiB"),
            Case("cache_4K", 1, 4 * KiB, 1000, 50, reference=False, nslots=1, op="pull_cache", group="cache",
                 label="pull_cache 1 x 4 KiB latency"),
            model("llama8b_2k_cache", "cache", 2048, 1, 10, 2, op="pull_cache"),
        ]
    # The sweep includes (b) and (c): keep them when the sweep is asked for without the reference group.
    keep = set(groups)
    return [c for c in cases if c.group in keep or ("sweep" in keep and c.name in SWEEP)]


# ---------------------------------------------------------------------------------------------
# extras: link set-up, metadata bytes, registration, failures

class CountingProxy:
    """A TCP proxy on loopback that forwards every connection to `target` and counts the bytes
    each way (per connection), so the handshake of a link can be measured from outside."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.up = self.down = self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, direction: str) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                with self.lock:
                    if direction == "up":
                        self.up += len(data)
                    else:
                        self.down += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.connections += 1
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(c, u, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, "down"), daemon=True).start()

    def snapshot(self) -> Dict[str, int]:
        with self.lock:
            return {"decode_to_prefill": self.up, "prefill_to_decode": self.down, "connections": self.connections}

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def measure_links(args: argparse.Namespace, transports: Sequence[str], repeats: int, metadata: bool,
                  progress: Progress) -> Dict[str, Any]:
    """link_clusters / unlink_clusters times per transport, and the handshake's bytes through a proxy."""
    import llm_datadist as ld
    from .transfer import DECODE_ID, PREFILL_ID, Prefill, free_port, make_config
    out: Dict[str, Any] = {}
    for transport in transports:
        env = dict(os.environ)
        if transport != "tcp":
            env.pop("LLMDD_TRANSPORT", None)
        port = free_port()
        conf = {"placements": ["host"], "pool_bytes": 4 * MiB, "port": port, "seed": 1, "transport": transport,
                "device_backend": args.device_backend, "sync_kv_timeout_ms": args.sync_kv_timeout_ms}
        prefill = Prefill(conf, env)
        dd = ld.LLMDataDist(ld.LLMRole.DECODER, DECODE_ID)
        res: Dict[str, Any] = {}
        try:
            dd.init(make_config(["host"], 4 * MiB, None, transport, args.device_backend, args.sync_kv_timeout_ms))

            def cluster(p: int) -> Any:
                ci = ld.LLMClusterInfo()
                ci.remote_cluster_id = PREFILL_ID
                ci.append_remote_ip_info("127.0.0.1", p)
                return ci
            link_ms, unlink_ms = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                ret, _r = dd.link_clusters([cluster(port)], timeout=args.link_timeout_ms)
                link_ms.append((time.perf_counter() - t0) * 1e3)
                if ret != ld.LLMStatusCode.LLM_SUCCESS:
                    raise RuntimeError(f"link_clusters returned {ret!s}")
                res["transport"] = dd.link_info(PREFILL_ID)["transport"]
                t0 = time.perf_counter()
                dd.unlink_clusters([cluster(port)], timeout=args.link_timeout_ms)
                unlink_ms.append((time.perf_counter() - t0) * 1e3)
            res["link_ms"], res["unlink_ms"] = quantiles(link_ms, samples=True), quantiles(unlink_ms, samples=True)
            progress.step(f"link set-up {transport}: median {res['link_ms']['median']:.2f} ms")
            if metadata:
                proxy = CountingProxy(port)
                try:
                    ret, _r = dd.link_clusters([cluster(proxy.port)], timeout=args.link_timeout_ms)
                    at_link = proxy.snapshot()
                    info = dd.link_info(PREFILL_ID)
                    time.sleep(0.35)               # a few idle heartbeats (100 ms), for scale
                    idle = proxy.snapshot()
                    dd.unlink_clusters([cluster(proxy.port)], timeout=args.link_timeout_ms)
                    res["metadata"] = {
                        "how": "every byte through a recording TCP proxy between link_clusters' call and its return "
                               "(the whole handshake: version, cluster ids, host identity, pool descriptors, "
                               "secret challenge when set); bytes passed as memfds over the shm transport's "
                               "abstract Unix socket are not TCP bytes and are not counted, nor are the frames "
                               "that follow on that socket when the link's channel is unix (heartbeats included)",
                        "ok": ret == ld.LLMStatusCode.LLM_SUCCESS, "transport": info.get("transport"),
                        "channel": info.get("channel"),
                        "handshake_bytes": at_link["decode_to_prefill"] + at_link["prefill_to_decode"],
                        **at_link,
                        "idle_bytes_per_s": round((idle["decode_to_prefill"] + idle["prefill_to_decode"]
                                                   - at_link["decode_to_prefill"] - at_link["prefill_to_decode"])
                                                  / 0.35, 1)}
                finally:
                    proxy.close()
                progress.step(f"metadata {transport}: {res['metadata']['handshake_bytes']} bytes")
        except Exception as exc:  # noqa: BLE001 - an extra failing is recorded, not fatal
            res["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            dd.finalize()
            prefill.close()
        out[transport] = res
    return out


def measure_registration(args: argparse.Namespace, regions: int, pool_bytes: int) -> Dict[str, Any]:
    import numpy as np

    import llm_datadist as ld
    from .transfer import make_config
    res: Dict[str, Any] = {"pool_bytes": pool_bytes, "regions": regions, "region_bytes": 16 * KiB}
    t0 = time.perf_counter()
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 9)
    dd.init(make_config(["host"], pool_bytes, None, "", args.device_backend, args.sync_kv_timeout_ms))
    res["init_with_pool_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
    try:
        cm = dd.cache_manager
        t0 = time.perf_counter()
        cache = cm.allocate_blocks_cache(ld.CacheDesc(1, [pool_bytes // (16 * KiB), 16 * KiB], ld.DataType.DT_UINT8,
                                                      ld.Placement.HOST))
        res["allocate_pool_cache_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
        cm.deallocate_blocks_cache(cache)
        bufs = [np.zeros(16 * KiB, dtype=np.uint8) for _ in range(regions)]
        desc = ld.CacheDesc(1, [1, 16 * KiB], ld.DataType.DT_UINT8, ld.Placement.HOST)
        per = []
        caches = []
        for i, b in enumerate(bufs):
            t0 = time.perf_counter()
            caches.append(cm.register_blocks_cache(desc, [b.ctypes.data], ld.BlocksCacheKey(9, i)))
            per.append((time.perf_counter() - t0) * 1e6)
        res["register_regions_ms"] = round(sum(per) / 1e3, 3)
        res["register_region_us"] = quantiles(per)
        t0 = time.perf_counter()
        for c in caches:
            cm.unregister_cache(c.cache_id)
        res["unregister_regions_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
    except Exception as exc:  # noqa: BLE001
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        dd.finalize()
    return res


# ---------------------------------------------------------------------------------------------
# peers

def run_peers(args: argparse.Namespace, bench: Any, peers: Sequence[str], progress: Progress,
              regions: int, wrap: Sequence[str] = (), spec_extra: Optional[Dict[str, Any]] = None,
              env_extra: Optional[Dict[str, str]] = None) -> Tuple[List[Any], Dict[str, Any]]:
    """wrap, spec_extra, env_extra: where the peer's initiator runs and what its target is told
    (--crossns: `ip netns exec`, the target's namespace and addresses; crossns.py)."""
    from .peers import peer_env
    from .transfer import Row
    rows, extras = [], {}
    cases = [c for c in bench.cases]
    max_descs = max(c.nblocks * c.tensors for c in cases)
    for peer in peers:
        spec = {"peer": peer, "pool_bytes": bench.pool, "pattern_bytes": bench.pattern_bytes, "seed": args.seed, "slot_seed": args.slot_seed,
                "cases": [asdict(c) for c in cases], "check": args.check, "regions": regions, **(spec_extra or {})}
        env = dict(os.environ)
        env.update(peer_env(peer, max_descs))
        env.update(env_extra or {})
        extras[peer] = {"env": peer_env(peer, max_descs), "python": args.peer_python}
        t0 = time.time()
        try:
            proc = subprocess.Popen([*wrap, args.peer_python, "-m", "llm_datadist._bench.peers", json.dumps(spec)],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        except OSError as exc:
            extras[peer]["error"] = str(exc)
            continue
        by_name = {c.name: c for c in cases}
        for line in proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "case":
                c = by_name[rec["case"]]
                row = Row(peer, c.name, "host", transport=rec.get("backend", ""), op=c.op, bytes=c.nbytes,
                          nblocks=c.nblocks, block_bytes=c.block, warmup=c.warmup, times_us=rec["times_us"],
                          verified=rec["verified"], verify_detail=rec["verify_detail"], error=rec["error"])
                errors = bench.errors
                bench._add(row)                 # (a peer's failure is the peer's: not counted as ours)
                bench.peer_errors += bench.errors - errors
                bench.errors = errors
                rows.append(row)
                progress.step(f"{peer} {c.name}: " + (f"{row.stats()['GBps']:.3f} GB/s" if row.times_us else
                                                     f"ERROR {row.error[:60]}"))
            elif rec.get("kind") == "extras":
                extras[peer].update({k: v for k, v in rec.items() if k != "kind"})
            elif rec.get("kind") == "error":
                extras[peer]["error"] = rec["error"]
                bench.notes.append(f"peer {peer} stopped: {rec['error'][:300]}")
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        extras[peer]["elapsed_s"] = round(time.time() - t0, 2)
    return rows, extras


# ---------------------------------------------------------------------------------------------
# report

def _gbps(bench: Any, system: str, case: str, placement: str = "host", transport: str = "") -> Optional[float]:
    r = bench._row(system, case, placement, transport)
    return r.stats()["GBps"] if r else None


def _ours(bench: Any, case: str, transport: str, placement: str = "host") -> Any:
    return bench._row("llm_datadist", case, placement, transport)


def ratios(bench: Any, peers: Sequence[str]) -> List[Dict[str, Any]]:
    """ours / peer per case (host placement), same run: shm vs NIXL (UCX default), tcp vs NIXL tcp
    and Mooncake tcp; for (d) and latency cases the ratio of medians is peer / ours (higher: ours faster)."""
    pairs = [("shm", "nixl"), ("tcp", "nixl_tcp"), ("tcp", "mooncake_tcp")]
    out = []
    for c in bench.cases:
        for ours_t, peer in pairs:
            if peer not in peers:
                continue
            o, p = _ours(bench, c.name, ours_t), bench._row(peer, c.name, "host", bench._peer_transport.get(peer, ""))
            if o is None or p is None:
                continue
            so, sp = o.stats(), p.stats()
            out.append({"case": c.name, "ours": f"llm_datadist/{ours_t}", "peer": peer,
                        "ours_GBps": so["GBps"], "peer_GBps": sp["GBps"], "ours_median_us": so["median_us"],
                        "peer_median_us": sp["median_us"], "speedup": round(sp["median_us"] / so["median_us"], 3)})
    return out


def acceptance(bench: Any, peers: Sequence[str]) -> List[Dict[str, Any]]:
    """Issue 5's acceptance from this run: against the peers measured in it when present, else the
    recorded baseline (labelled so)."""
    from .transfer import PEER_BASELINE
    out = []
    comparable = {c.name: c.reference for c in bench.cases}

    def add(name, value, threshold, higher, unit, case, source):
        ok = None if value is None else (value >= threshold if higher else value <= threshold)
        out.append({"name": name, "value": None if value is None else round(value, 3), "threshold": threshold,
                    "rule": (">=" if higher else "<=") + f" {threshold}{unit}", "pass": ok, "against": source,
                    "comparable": bool(comparable.get(case))})

    def vs(case: str, ours_t: str, peer: str, base_key: str, threshold: float) -> None:
        o = _gbps(bench, "llm_datadist", case, "host", ours_t)
        p = bench._row(peer, case, "host", bench._peer_transport.get(peer, "")) if peer in peers else None
        if p is not None:
            add(f"{ours_t} ({case}) / {SYSTEM_LABEL[peer]} ({case})", None if o is None else o / p.stats()["GBps"],
                threshold, True, "x", case, "measured in this run")
        else:
            base = PEER_BASELINE[base_key][case]
            add(f"{ours_t} ({case}) / {SYSTEM_LABEL[peer]} ({case}) {base} GB/s",
                None if o is None else o / base, threshold, True, "x", case, "recorded baseline (peer_baseline.md)")
    vs("c", "shm", "nixl", "nixl", 3.0)
    vs("a", "shm", "nixl", "nixl", 2.0)
    vs("c", "tcp", "mooncake_tcp", "mooncake", 1.0)
    d = _ours(bench, "d", "shm")
    add("shm (d) 4 KiB median latency", d.stats()["median_us"] if d else None, 20.0, False, " us", "d", "absolute")
    strided = _ours(bench, "d_strided", "shm", "device")
    add("shm new-user strided 4 KiB median / (d) median", strided.stats()["median_us"] / d.stats()["median_us"]
        if d and strided else None, 1.5, False, "x", "d", "absolute")
    for name, row in (("(d)", d), ("new-user strided", strided)):
        if row is not None:
            st = row.stats()
            add(f"shm {name} 4 KiB p99 / median", st["p99_us"] / st["median_us"], 3.0, False, "x", "d", "absolute")
    return out


def table(bench: Any, ratio_rows: List[Dict[str, Any]], accept: List[Dict[str, Any]], extras: Dict[str, Any]) -> str:
    from .transfer import human
    L: List[str] = []
    rows_table = Table([Column("case", 44, "<", clip=True), Column("system", 24, "<"), Column("place", 6, "<"),
                        Column("GB/s", 8), Column("median us", 10), Column("p99 us", 10), Column("of ceiling", 16),
                        Column("check", 5)])
    order = {c.name: i for i, c in enumerate(bench.cases)}
    sysorder = {"llm_datadist": 0, "nixl": 1, "nixl_tcp": 2, "mooncake_tcp": 3}
    group = None
    for r in sorted(bench.rows, key=lambda r: (order.get(r.case, 99), r.placement != "host",
                                               sysorder.get(r.system, 9), r.system, r.transport)):
        c = next(c for c in bench.cases if c.name == r.case)
        if c.group != group:
            group = c.group
            L += ["", f"== {group} ==", *rows_table.header()]
        name = c.label or c.name
        system = {"llm_datadist": f"llm_datadist/{r.transport}"}.get(r.system, SYSTEM_LABEL.get(r.system, r.system))
        if r.error:
            L.append(rows_table.row_then_text([name, system, r.placement], f"ERROR {r.error[:70]}"))
            continue
        s = r.stats()
        frac = ""
        for ceil in ("cuda_d2d", "cuda_gather2", "memcpy", "cma"):
            if ceil in r.frac_of:
                frac = f"{r.frac_of[ceil]:.2f} {ceil}"
                break
        check = {True: "ok", False: "FAIL", None: "-"}[r.verified]
        L.append(rows_table.row(name, system, r.placement, fmt(s["GBps"], ".3f"), f"{s['median_us']:.1f}",
                                f"{s['p99_us']:.1f}", frac, check))
    L.append("of ceiling: our GB/s over that of the same blocks copied by memcpy in one process, 1 thread "
             "(cuda_d2d / cuda_gather2 for CUDA device rows); the JSON has every ceiling's fraction")
    if ratio_rows:
        ratio_table = Table([Column("case", 16, "<"), Column("ours", 18, "<"), Column("GB/s", 8),
                             Column("peer", 16, "<"), Column("GB/s", 8), Column("speed-up", 9)])
        L += ["", "ours / peer, same run, host memory (speed-up = peer median time / ours):", ratio_table.header()[0]]
        for x in ratio_rows:
            L.append(ratio_table.row(x["case"], x["ours"], f"{x['ours_GBps']:.3f}", SYSTEM_LABEL[x["peer"]],
                                     f"{x['peer_GBps']:.3f}", f"{x['speedup']:.2f}x"))
    if accept:
        L += ["", "acceptance (issue 5), this run:"]
        for a in accept:
            verdict = "n/a " if a["pass"] is None else ("PASS" if a["pass"] else "FAIL")
            value = "-" if a["value"] is None else f"{a['value']:.3f}"
            tag = "" if a["comparable"] else "  (scaled cases: not the reference numbers)"
            L.append(f"  {verdict} {a['name']:<48} {value:>9} (need {a['rule']}; {a['against']}){tag}")
    links = extras.get("link") or {}
    if links:
        L += ["", "links:"]
        for t, v in links.items():
            if "error" in v:
                L.append(f"  {t}: ERROR {v['error']}")
                continue
            md = v.get("metadata") or {}
            L.append(f"  {t} ({v.get('transport')}): link_clusters median {v['link_ms']['median']:.2f} ms "
                     f"(p99 {v['link_ms']['p99']:.2f}), unlink {v['unlink_ms']['median']:.2f} ms"
                     + (f"; handshake {md['handshake_bytes']} bytes over {md['connections']} connection(s) "
                        f"({md['decode_to_prefill']} out, {md['prefill_to_decode']} back), "
                        + ("then frames (heartbeats too) on the Unix channel, not counted"
                           if md.get("channel") == "unix" else f"idle {md['idle_bytes_per_s']:.0f} B/s")
                        if md else ""))
    reg = extras.get("registration")
    if reg:
        if "error" in reg:
            L += ["", f"registration: ERROR {reg['error']}"]
        else:
            L += ["", f"registration: init with a {human(reg['pool_bytes'])} pool {reg['init_with_pool_ms']:.1f} ms, "
                      f"a cache over all of it {reg['allocate_pool_cache_ms']:.2f} ms; {reg['regions']} separate "
                      f"16 KiB user regions (register_blocks_cache, one call each) {reg['register_regions_ms']:.1f} ms "
                      f"({reg['register_region_us']['median']:.1f} us median each), unregistered in "
                      f"{reg['unregister_regions_ms']:.1f} ms"]
    for peer, v in (extras.get("peers") or {}).items():
        if v.get("register_regions_ms") is not None:
            L.append(f"  {SYSTEM_LABEL[peer]}: pool {v['register_pool_ms']:.1f} ms, {v['regions']} regions "
                     f"{v['register_regions_ms']:.1f} ms" + (f"; metadata blob {v['metadata_bytes']} bytes, "
                                                             f"add_remote_agent {v['link_ms']:.2f} ms"
                                                             if v.get("metadata_bytes") else ""))
    fail = extras.get("failures")
    if fail:
        if "error" in fail:
            L += ["", f"peer failure: ERROR {fail['error']}"]
        else:
            m = fail["medians_ms"]
            L += ["", f"peer failure ({fail['repeats']} repeats): killed prefill -> pull in flight fails in "
                      f"{m.get('kill_in_flight_ms', float('nan')):.1f} ms ({fail['codes'].get('kill_in_flight')}), "
                      f"next call {m.get('kill_next_call_ms', float('nan')):.2f} ms; frozen prefill -> "
                      f"{fail['codes'].get('freeze')} in {m.get('freeze_timeout_ms', float('nan')):.0f} ms "
                      f"(sync_kv_timeout {fail['sync_kv_timeout_ms']} ms); relink after restart "
                      f"{m.get('relink_after_restart_ms', float('nan')):.1f} ms"]
    from .transfer import PEER_BASELINE
    L += ["", f"recorded peer baseline (NOT this run; {PEER_BASELINE['source']}): "
              f"NIXL a/b/c {PEER_BASELINE['nixl']['a']}/{PEER_BASELINE['nixl']['b']}/{PEER_BASELINE['nixl']['c']} "
              f"GB/s, d {PEER_BASELINE['nixl']['d_us']} us; Mooncake tcp {PEER_BASELINE['mooncake']['a']}/"
              f"{PEER_BASELINE['mooncake']['b']}/{PEER_BASELINE['mooncake']['c']} GB/s, d "
              f"{PEER_BASELINE['mooncake']['d_us']} us"]
    if bench.notes:
        L += ["", "notes:"] + [f"  - {n}" for n in bench.notes]
    return "\n".join(L)


def plot(bench: Any, path: Path, title_note: str) -> Optional[str]:
    """The sweep's GB/s against block size, one line per system and ceiling; None, or why there
    is no plot (report.line_plot). A new kind of row is one more entry in `systems`."""
    by_name = {c.name: c for c in bench.cases}
    sweep = [n for n in SWEEP if n in by_name]
    series: List[Series] = []
    systems = [("llm_datadist", "shm", "llm_datadist shm", False), ("llm_datadist", "tcp", "llm_datadist tcp", False)]
    systems += [(p, bench._peer_transport.get(p, ""), SYSTEM_LABEL[p], False) for p in ("nixl", "nixl_tcp",
                                                                                        "mooncake_tcp")]
    systems += [("memcpy", "", "ceiling: memcpy 1 thread", True), ("memcpy_mt", "", "ceiling: memcpy threads", True),
                ("cma", "", "ceiling: CMA", True)]
    for system, transport, label, dashed in systems:
        pts = [(by_name[n].block, _gbps(bench, system, n, "host", transport)) for n in sweep]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            series.append(Series(label, [(float(x), float(y)) for x, y in pts], dashed))
    total = by_name[sweep[0]].nbytes if sweep else 0
    return line_plot(path, series, "pull_blocks GB/s against block size", "block size (bytes per block)", "GB/s",
                     subtitle=f"host memory, {total >> 20} MiB per request, median; {title_note}")


# ---------------------------------------------------------------------------------------------
# the command

def strided_rows(bench: Any, transports: Sequence[str], pulls: int, note: Any) -> None:
    """The new user's 4 KiB pulls (d_strided) on each transport, each in fresh processes: a row
    beside (d), p50 and p99 like it, so the gap between what the bench and such a caller see
    is in every run."""
    from .latency import BLOCK, NBLOCKS, fresh_strided_row
    from .transfer import Case, Row
    case = Case("d_strided", 1, BLOCK, pulls, 0, reference=False, nslots=NBLOCKS, group="reference",
                label="(d) as a new user: strided dst, 2nd cache, fresh procs")
    at = next((i + 1 for i, c in enumerate(bench.cases) if c.name == "d"), len(bench.cases))
    bench.cases.insert(at, case)
    for transport in transports:
        note(f"{transport}: the new user's strided 4 KiB pulls in fresh processes")
        res = fresh_strided_row(transport, pulls)
        bench._add(Row("llm_datadist", case.name, "device", transport=transport, op="pull_blocks",
                       bytes=BLOCK, nblocks=1, block_bytes=BLOCK, warmup=0, times_us=res.get("times_us", []),
                       verified=res.get("verified"), error=res.get("error", "")))


def run(args: argparse.Namespace, argv: Optional[Sequence[str]] = None) -> int:
    import llm_datadist as ld

    from . import transfer
    started = time.time()
    load_at_start = list(os.getloadavg())
    command = " ".join(["llm-datadist", "bench", *(sys.argv[2:] if argv is None else argv)])
    transports = [t for t in args.transport.split(",") if t and t != "none"]
    placements = [p for p in args.placement.split(",") if p]
    groups = [g for g in args.groups.split(",") if g]
    extras_wanted = [e for e in args.extras.split(",") if e and e != "none"]
    bad = [t for t in transports if t not in ("shm", "tcp")] + [p for p in placements if p not in ("host", "device")]
    bad += [g for g in groups if g not in ("reference", "sweep", "batch", "model", "cache")]
    bad += [e for e in extras_wanted if e not in ("link", "registration", "metadata", "failures")]
    if bad or not placements:
        print(f"llm-datadist bench: unknown value(s) {bad or '(empty --placement)'}", file=sys.stderr)
        return 2
    cases = build_cases(args.quick, groups)
    if args.iters is not None or args.warmup is not None:
        for c in cases:
            c.iters = args.iters if args.iters is not None else c.iters
            c.warmup = args.warmup if args.warmup is not None else c.warmup
            c.reference = False
    # the transfer Bench's own arguments
    bargs = argparse.Namespace(transport=transports, placement=placements, op="pull_blocks", cases="", iters=None,
                               warmup=None, check=args.check,
                               ceilings=[c for c in args.ceilings.split(",") if c and c != "none"],
                               threads=args.threads, pool_mib=0, seed=args.seed, slot_seed=args.slot_seed,
                               device_backend=args.device_backend, sync_kv_timeout_ms=args.sync_kv_timeout_ms,
                               link_timeout_ms=args.link_timeout_ms, out=None)

    # peers: which run
    from .peers import PEERS, available
    if args.peers == "none":
        peers, why_not = [], {p: "--peers none" for p in PEERS}
    else:
        avail = available(args.peer_python)
        wanted = list(PEERS) if args.peers == "auto" else [p for p in args.peers.split(",") if p]
        peers = [p for p in wanted if p in avail and not avail[p]]
        why_not = {p: avail.get(p, "unknown peer") for p in PEERS if p not in peers}
    if "shm" not in transports:
        peers = [p for p in peers if p != "nixl"]
    if "tcp" not in transports:
        peers = [p for p in peers if p == "nixl"]

    big = [c.name for c in cases if c.pool_bytes > 1 << 30]
    n_cases = sum(len(cases) - (len(big) if p != "host" else 0) for p in placements) * max(1, len(transports))
    n_steps = n_cases + len(cases) * len(peers) + 2 * len(transports) * ("link" in extras_wanted) + \
        ("registration" in extras_wanted) + ("failures" in extras_wanted) + 1
    progress = Progress(n_steps)
    transfer._LOG_HOOK = progress.note
    bench = transfer.Bench(bargs, cases)
    bench._peer_transport = {}
    bench.peer_errors = 0
    big = [c.name for c in cases if c.pool_bytes > 1 << 30]       # host only: memory on a small machine
    bench.placement_cases = {p: [c.name for c in cases if p == "host" or c.name not in big] for p in placements}
    bench.on_case = lambda t, p, c: progress.step(f"{t or 'ceilings'} {p} {c.name} done")
    extras: Dict[str, Any] = {}
    regions = 256 if args.quick else 4096
    try:
        try:
            progress.note("ceilings: memcpy in this process")
            bench.local_ceilings()
            progress.step("memcpy ceilings done")
            if "device" in placements and ld._core.cuda_info().get("available") and args.device_backend != "cpu":
                bench.cuda_ceilings()
            for i, transport in enumerate(transports or [None]):
                try:
                    bench.run_pass(transport, do_cma=(i == 0))
                except Exception as exc:  # noqa: BLE001 - keep the other passes' results
                    bench.errors += 1
                    bench.notes.append(f"pass {transport or 'ceilings'} stopped: {type(exc).__name__}: {exc}")
        finally:
            bench.helper.close()
        if "link" in extras_wanted or "metadata" in extras_wanted:
            extras["link"] = measure_links(args, transports, 5 if args.quick else 20, "metadata" in extras_wanted,
                                           progress)
        if "registration" in extras_wanted:
            extras["registration"] = measure_registration(args, regions, 16 * MiB if args.quick else REF_POOL)
            progress.step("registration done")
        if "failures" in extras_wanted:
            from .failures import measure
            try:
                extras["failures"] = measure(1 if args.quick else 3, 200 if args.quick else 500, progress.note)
            except Exception as exc:  # noqa: BLE001
                extras["failures"] = {"error": f"{type(exc).__name__}: {exc}"}
            progress.step("failure detection done")
        if peers:
            _rows, extras["peers"] = run_peers(args, bench, peers, progress, regions)
            for p in peers:
                bench._peer_transport[p] = next((r.transport for r in _rows if r.system == p), "")
        if args.crossns:
            from . import crossns
            extras["crossns"] = crossns.run(args, progress)
    finally:
        transfer._LOG_HOOK = None
        progress.close()
    if transports and "reference" in groups:
        strided_rows(bench, transports, 100 if args.quick else 1000, progress.note)
    bench.fractions()
    ratio_rows = ratios(bench, peers)
    accept = acceptance(bench, peers) if transports else []
    print(table(bench, ratio_rows, accept, extras))
    if "crossns" in extras:
        from . import crossns
        print("\n" + crossns.table(extras["crossns"]))
        bench.errors += extras["crossns"].get("errors", 0)
    elapsed = time.time() - started
    verified = sum(1 for r in bench.rows if r.verified)
    print(f"\n{len(bench.rows)} rows in {elapsed:.1f} s; "
          + (f"every byte verified ({verified} rows checked)" if args.check and not bench.errors else
             (f"{bench.errors} error(s)" if bench.errors else "bytes not checked (--no-check)")))
    if peers:
        print(f"peers in this run: {', '.join(SYSTEM_LABEL[p] for p in peers)}"
              + (f"; {bench.peer_errors} peer row(s) failed (see ERROR rows)" if bench.peer_errors else ""))
    else:
        print("peers: none in this run (" + "; ".join(sorted(set(why_not.values()))) + ")")
    png_path = args.png or (args.out.with_suffix(".png") if args.out else None)
    no_plot: Optional[str] = None
    if png_path:
        no_plot = plot(bench, png_path, "quick (tiny sizes)" if args.quick else f"{time.strftime('%Y-%m-%d')}")
        print(no_plot or f"plot in {png_path}")
    if args.out:
        record = {
            "schema": SCHEMA, "command": command, "argv": list(sys.argv if argv is None else ["llm-datadist", "bench",
                                                                                             *argv]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "elapsed_s": round(elapsed, 2),
            "quick": args.quick, "machine": transfer.machine_info() | {"loadavg_at_start": load_at_start},
            "config": {"transports": transports, "placements": placements, "groups": groups, "check": args.check,
                       "threads": args.threads, "ceilings": bargs.ceilings, "seed": args.seed,
                       "slot_seed": args.slot_seed, "sync_kv_timeout_ms": args.sync_kv_timeout_ms,
                       "pool_bytes": bench.pool, "mem_pool_bytes": bench.mem_bytes,
                       "cases": [asdict(c) | {"bytes": c.nbytes} for c in cases],
                       "timing": "llm_datadist and peers: perf_counter around each request (API included); "
                                 "ceilings: clock_gettime inside the C helper (torch + synchronize on CUDA)"},
            "peers": {"run": peers, "not_run": why_not, "python": args.peer_python,
                      "extras": extras.get("peers", {})},
            "peer_baseline_recorded": transfer.PEER_BASELINE,
            "links": bench.links, "rows": [r.to_json() | {"group": next(c.group for c in cases if c.name == r.case)}
                                           for r in bench.rows],
            "ratios": ratio_rows, "acceptance": accept,
            "extras": {k: v for k, v in extras.items() if k != "peers"},
            "plot": {"path": str(png_path) if png_path and not no_plot else None, "renderer": "matplotlib",
                     "skipped": no_plot},
            "notes": bench.notes, "errors": bench.errors, "peer_errors": bench.peer_errors, "loadavg_at_end": list(os.getloadavg()),
        }
        write_record(args.out, record, indent=1)
    return 0 if bench.errors == 0 else 1
