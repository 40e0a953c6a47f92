# SPDX-License-Identifier: Apache-2.0
"""Small two-sided and one-sided pulls between two real processes, with nothing else around them:
the tool behind docs/transfer.md "Small pulls" (where the time goes, syscalls per pull).

    python benchmarks/small_pull_latency.py --transport shm --iters 3000
    python benchmarks/small_pull_latency.py --transport tcp --iters 3000 --json out.json
    strace -f -c -o /tmp/req.txt python benchmarks/small_pull_latency.py --role decode ...

Cases (4 KiB each): pull_cache by a prefix CacheKey (two-sided: the owner resolves the key and
describes or streams), pull_cache by CacheKeyByIdAndIndex (two-sided), pull_blocks by a
BlocksCacheKey of one block (one-sided on shm, owner-streamed on tcp). Prints median and p99 per
case in microseconds. `--only CASE` runs one case (for strace/perf); `--owner-pid-file` writes
the owner's pid so a tracer can attach to it.

Same-run A/B of two builds: `--ab-before DIR` (a directory holding the baseline's installed
`llm_datadist` package, put first on PYTHONPATH) runs this script alternately with the baseline
and with the installed build, `--rounds` times per transport, and reports each case's median
of the round medians (and p99s) per build, with the after/before ratio. `--ab-before-env
NAME=VALUE` sets a variable for the baseline's runs only: with it alone, the A/B is of a setting
on one build (e.g. `--ab-before-env LLMDD_POLL_SPIN_US=0`: waits that sleep at once, against
the default spin).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PREFILL_ID, DECODE_ID = 1, 2
BLOCK = 4096
NBLOCKS = 1024


def config(port: int, transport: str, listen: bool):
    import llm_datadist as ld
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 64 << 20})
    if listen:
        cfg.listen_ip_info = f"127.0.0.1:{port}"
    cfg.sync_kv_timeout = 5000
    opts = cfg.generate_options()
    opts["llmdd.Transport"] = "tcp" if transport == "tcp" else "auto"
    return opts


def desc(nslots: int):
    import llm_datadist as ld
    return ld.CacheDesc(1, [nslots, BLOCK], ld.DataType.DT_UINT8, ld.Placement.HOST)


def owner(port: int, transport: str) -> int:
    import llm_datadist as ld
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, PREFILL_ID)
    dd.init(config(port, transport, True))
    cm = dd.cache_manager
    prefix = cm.allocate_cache(desc(4), [ld.CacheKey(PREFILL_ID, 2**64 - 1, prefix_id=5)])
    blocks = cm.allocate_blocks_cache(desc(NBLOCKS), ld.BlocksCacheKey(PREFILL_ID, 1))
    for c, v in ((prefix, 7), (blocks, 9)):
        c.numpy(0).reshape(-1).view("uint8")[:] = v
    print(json.dumps({"ready": True, "pid": os.getpid(), "cache_id": prefix.cache_id}), flush=True)
    sys.stdin.readline()  # until the decode is done
    dd.finalize()
    return 0


def decode(port: int, transport: str, iters: int, only: str, cache_id: int) -> dict:
    import llm_datadist as ld
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, DECODE_ID)
    dd.init(config(port, transport, False))
    cluster = ld.LLMClusterInfo()
    cluster.remote_cluster_id = PREFILL_ID
    cluster.append_local_ip_info("127.0.0.1", 0)
    cluster.append_remote_ip_info("127.0.0.1", port)
    status, per = dd.link_clusters([cluster], 5000)
    assert status == ld.LLMStatusCode.LLM_SUCCESS and all(s == ld.LLMStatusCode.LLM_SUCCESS for s in per), per
    cm = dd.cache_manager
    dst = cm.allocate_cache(desc(4))
    dst_blocks = cm.allocate_blocks_cache(desc(NBLOCKS), ld.BlocksCacheKey(DECODE_ID, 1))
    prefix_key = ld.CacheKey(PREFILL_ID, 2**64 - 1, prefix_id=5)
    id_key = ld.CacheKeyByIdAndIndex(PREFILL_ID, cache_id, 0)
    blocks_key = ld.BlocksCacheKey(PREFILL_ID, 1)
    cases = {
        "pull_cache_prefix_key": lambda i: cm.pull_cache(prefix_key, dst, 0),
        "pull_cache_id_key": lambda i: cm.pull_cache(id_key, dst, 1),
        "pull_blocks_1": lambda i: cm.pull_blocks(blocks_key, dst_blocks, [i % NBLOCKS], [(i * 7) % NBLOCKS]),
    }
    out = {}
    for name, fn in cases.items():
        if only and name != only:
            continue
        for i in range(200):
            fn(i)
        t = []
        for i in range(iters):
            t0 = time.perf_counter_ns()
            fn(i)
            t.append((time.perf_counter_ns() - t0) / 1000)
        t.sort()
        out[name] = {"median_us": round(statistics.median(t), 2), "p99_us": round(t[int(len(t) * 0.99)], 2),
                     "iters": iters}
    if "pull_cache_prefix_key" in out:
        assert int(dst.numpy(0).reshape(-1).view("uint8")[0]) == 7
    dd.finalize()
    return out


def ab(o: argparse.Namespace) -> int:
    runs: dict = {}
    for r in range(o.rounds):
        for build in ("before", "after"):
            for transport in ("shm", "tcp"):
                env = dict(os.environ)
                if build == "before":
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, [o.ab_before, env.get("PYTHONPATH")]))
                    env.update(item.split("=", 1) for item in o.ab_before_env)
                out = subprocess.run([sys.executable, __file__, "--role", "decode-both", "--transport", transport,
                                      "--iters", str(o.iters), "--port", str(o.port + r * 4 + (build == "after") * 2
                                                                             + (transport == "tcp"))],
                                     env=env, check=True, capture_output=True, text=True).stdout
                for case, row in json.loads(out.strip().splitlines()[-1]).items():
                    runs.setdefault((transport, case), {}).setdefault(build, []).append(row)
    rows = []
    for (transport, case), by in sorted(runs.items()):
        b = statistics.median(x["median_us"] for x in by["before"])
        a = statistics.median(x["median_us"] for x in by["after"])
        rows.append({"transport": transport, "case": case, "before_median_us": round(b, 2),
                     "after_median_us": round(a, 2), "after_over_before": round(a / b, 3),
                     "before_p99_us": round(statistics.median(x["p99_us"] for x in by["before"]), 2),
                     "after_p99_us": round(statistics.median(x["p99_us"] for x in by["after"]), 2),
                     "before_rounds_us": [x["median_us"] for x in by["before"]],
                     "after_rounds_us": [x["median_us"] for x in by["after"]]})
        print(f"{transport:<4} {case:<24} before {b:8.2f} us  after {a:8.2f} us  ratio {a / b:6.3f}")
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                       "rounds": o.rounds, "iters": o.iters, "rows": rows}, f, indent=1)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=["both", "owner", "decode", "decode-both"], default="both",
                    help="decode-both: both processes, the result as one JSON line (for --ab-before)")
    ap.add_argument("--transport", choices=["shm", "tcp"], default="shm")
    ap.add_argument("--port", type=int, default=26710)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--only", default="")
    ap.add_argument("--cache-id", type=int, default=-1)
    ap.add_argument("--owner-wrap", default="", help="argv prefix for the owner (e.g. 'strace -f -c -o F')")
    ap.add_argument("--json", default="")
    ap.add_argument("--ab-before", default="", help="baseline package directory (same-run A/B)")
    ap.add_argument("--ab-before-env", action="append", default=[], metavar="NAME=VALUE",
                    help="set for the baseline's runs only (same-run A/B of a setting, e.g. "
                         "LLMDD_POLL_SPIN_US=0; with no --ab-before, both use the installed build)")
    ap.add_argument("--rounds", type=int, default=5)
    o = ap.parse_args()
    if o.ab_before or o.ab_before_env:
        return ab(o)
    if o.role == "owner":
        return owner(o.port, o.transport)
    if o.role == "decode":
        print(json.dumps(decode(o.port, o.transport, o.iters, o.only, o.cache_id)))
        return 0
    argv = [*o.owner_wrap.split(), sys.executable, __file__, "--role", "owner", "--transport", o.transport,
            "--port", str(o.port)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        hello = json.loads(proc.stdout.readline())
        res = decode(o.port, o.transport, o.iters, o.only, hello["cache_id"])
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    if o.role == "decode-both":
        print(json.dumps(res))
        return 0
    for name, r in res.items():
        print(f"{o.transport:<4} {name:<24} median {r['median_us']:8.2f} us  p99 {r['p99_us']:8.2f} us")
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "transport": o.transport,
                       "rows": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
