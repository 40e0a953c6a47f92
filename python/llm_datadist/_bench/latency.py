# SPDX-License-Identifier: Apache-2.0
"""Latency of one small pull_blocks, as a new user writes it and as the bench's (d) does.

    python benchmarks/small_pull_patterns.py [--pulls 1000] [--rounds 3] [--transport shm]
        [--patterns fixed,strided,strided_warm] [--out benchmarks/results/X.json]

(The runnable code of benchmarks/small_pull_patterns.py, and of the strided row of
`llm-datadist bench`: see fresh_strided_row.)

Each round starts a fresh owner process and runs every pattern in this (fresh) process's
first pulls: both sides allocate a 256 MiB blocks cache first, then a 1024 x 4 KiB blocks cache
(CacheDesc(1, [1024, 4096], DT_UINT8, DEVICE), the CPU device on a host without CUDA) keyed
BlocksCacheKey(1, 1). Patterns, `--pulls` pulls of one 4 KiB block each:

  fixed         src_blocks=[0], dst_blocks=[0] every time (the bench's (d))
  strided       src_blocks=[i % 1024], dst_blocks=[(i * 7) % 1024] (the new user's script),
                into destination blocks this process has not touched yet
  strided_warm  the same pattern again, every destination page now touched once
  src_strided / dst_strided  one side strided only (to tell the two sides' costs apart)

Every pulled block is compared with the owner's bytes after the timed loop. `--callgrind`
runs only the given pattern with no timing output, for `valgrind --tool=callgrind` instruction
counts (run with --pulls 0 and --pulls N: the difference / N is the cost of one pull).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np

OWNER, REQUESTER = 1, 2
NBLOCKS, BLOCK = 1024, 4096
BIG = 256 << 20


def _config(listen: str, transport: str) -> Dict[str, str]:
    import llm_datadist as ld
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": BIG + (16 << 20)})
    if listen:
        cfg.listen_ip_info = listen
    opts = cfg.generate_options()
    if transport == "tcp":
        opts["llmdd.Transport"] = "tcp"
    return opts


def _caches(cm: Any) -> Any:
    import llm_datadist as ld
    big = cm.allocate_blocks_cache(ld.CacheDesc(1, [BIG // (64 << 10), 64 << 10], ld.DataType.DT_UINT8,
                                                ld.Placement.DEVICE), ld.BlocksCacheKey(OWNER, 2))
    small = cm.allocate_blocks_cache(ld.CacheDesc(1, [NBLOCKS, BLOCK], ld.DataType.DT_UINT8, ld.Placement.DEVICE),
                                     ld.BlocksCacheKey(OWNER, 1))
    return big, small


def owner_main(port: int, transport: str) -> int:
    import llm_datadist as ld
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, OWNER)
    dd.init(_config(f"127.0.0.1:{port}", transport))
    big, small = _caches(dd.cache_manager)
    view = small.numpy(0).reshape(-1).view(np.uint8)
    view[...] = np.random.default_rng(7).integers(0, 256, view.size, dtype=np.uint8)
    print("ready", flush=True)
    sys.stdin.readline()
    del view
    dd.finalize()
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pattern(name: str, i: int) -> Any:
    if name == "fixed":  # (strided and strided_warm: the same lists; warm runs after strided)
        return [0], [0]
    if name == "src_strided":
        return [i % NBLOCKS], [0]
    if name == "dst_strided":
        return [0], [(i * 7) % NBLOCKS]
    return [i % NBLOCKS], [(i * 7) % NBLOCKS]


def one_round(args: argparse.Namespace, patterns: List[str]) -> Dict[str, Any]:
    import llm_datadist as ld
    port = _free_port()
    owner = subprocess.Popen([sys.executable, "-m", "llm_datadist._bench.latency", "--owner", str(port),
                              "--transport", args.transport], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert owner.stdout is not None and owner.stdin is not None
    if owner.stdout.readline().strip() != "ready":
        raise SystemExit("owner did not start")
    out: Dict[str, Any] = {}
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, REQUESTER)
    try:
        dd.init(_config("", args.transport))
        cm = dd.cache_manager
        big, small = _caches(cm)
        ci = ld.LLMClusterInfo()
        ci.remote_cluster_id = OWNER
        ci.append_remote_ip_info("127.0.0.1", port)
        ret, _ = dd.link_clusters([ci], timeout=5000)
        assert ret == ld.LLMStatusCode.LLM_SUCCESS, ret
        key = ld.BlocksCacheKey(OWNER, 1)
        want = np.random.default_rng(7).integers(0, 256, NBLOCKS * BLOCK, dtype=np.uint8).reshape(NBLOCKS, BLOCK)
        for name in patterns:
            times = []
            perf = time.perf_counter
            for i in range(args.pulls):
                src, dst = _pattern(name, i)
                t0 = perf()
                cm.pull_blocks(key, small, src, dst, tensor_num_per_layer=1)
                times.append(perf() - t0)
            if args.callgrind:  # instruction counts of the pulls alone
                continue
            got = small.numpy(0).reshape(NBLOCKS, BLOCK)
            # the last pull into each destination block decides its bytes
            last = {_pattern(name, i)[1][0]: _pattern(name, i)[0][0] for i in range(args.pulls)}
            ok = all(np.array_equal(got[d], want[s]) for d, s in last.items())
            del got
            us = np.array(times) * 1e6
            if args.times:
                out.setdefault("times_us", {})[name] = [round(float(t), 3) for t in us]
                out.setdefault("verified", {})[name] = bool(ok)
                continue
            if len(us):
                out[name] = {"p50_us": round(float(np.percentile(us, 50)), 2),
                             "p99_us": round(float(np.percentile(us, 99)), 2),
                             "mean_us": round(float(us.mean()), 2), "min_us": round(float(us.min()), 2),
                             "max_us": round(float(us.max()), 2), "argmax": int(us.argmax()),
                             "over_100us": int((us > 100).sum()),
                             "verified": bool(ok)}
        dd.unlink_clusters([ci], timeout=5000)
    finally:
        dd.finalize()
        owner.stdin.write("quit\n")
        owner.stdin.flush()
        owner.wait(30)
    return out


def fresh_strided_row(transport: str, pulls: int = 1000, timeout_s: float = 300.0) -> Dict[str, Any]:
    """The bench's strided row: the new user's script (`strided` above) in a fresh requester
    process, which starts a fresh owner. Returns {"times_us": [...], "verified": bool} or
    {"error": ...}."""
    cmd = [sys.executable, "-m", "llm_datadist._bench.latency", "--times", "--patterns", "strided",
           "--transport", transport, "--pulls", str(pulls)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"no result in {timeout_s:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            res = json.loads(line)
            return {"times_us": res["times_us"]["strided"], "verified": res["verified"]["strided"]}
    return {"error": f"exit {done.returncode}: {' '.join(done.stderr.strip().splitlines()[-1:])}"}


def main() -> int:
    p = argparse.ArgumentParser(prog="small_pull_patterns.py", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--owner", type=int, help=argparse.SUPPRESS)
    p.add_argument("--transport", default="shm", choices=["shm", "tcp"])
    p.add_argument("--pulls", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--patterns", default="fixed,strided,strided_warm")
    p.add_argument("--callgrind", action="store_true")
    p.add_argument("--times", action="store_true", help="print every pull's time (one round, JSON)")
    p.add_argument("--no-gc", action="store_true", help="disable the garbage collector (the bench does)")
    p.add_argument("--out")
    args = p.parse_args()
    if args.owner is not None:
        return owner_main(args.owner, args.transport)
    if args.no_gc:
        gc.disable()
    patterns = args.patterns.split(",")
    rounds = []
    for r in range(1 if args.callgrind or args.times else args.rounds):
        res = one_round(args, patterns)
        rounds.append(res)
        if not args.callgrind:
            print(json.dumps({"round": r, **res}), flush=True)
    if args.times:
        return 0
    if args.out and not args.callgrind:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(["python", "benchmarks/small_pull_patterns.py"] + sys.argv[1:]),
                       "rounds": rounds}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
