# SPDX-License-Identifier: Apache-2.0
"""What the transfer metrics (csrc/common/metrics.h) cost a pull: metrics on against llmdd.Metrics=0,
in the same run.

    python benchmarks/metrics_overhead.py [--rounds 12] [--transports shm,tcp] [--no-callgrind]
        [--out benchmarks/results/metrics_overhead_<date>.json]

Two linked prefill/decode pairs per transport (real processes, real pools), one with metrics on,
one off. Rounds alternate between them (ABBA order); in each round the decode times, in process,
the reference cases (b) pull_blocks 1024 x 64 KiB (bandwidth, GB/s) and (d) pull_blocks 1 x 4 KiB
(latency, median us). Reported per case: the median over rounds of each side's value, the ratio
of those medians and the median of the per-round ratios, and the spread of the off side's rounds
(what "noise" means on this machine).

Wall-clock on a shared machine is noisy, so the stable number is the callgrind one: the decode of
a shm pair runs under `valgrind --tool=callgrind`, collecting only inside DataDistEngine::Pull,
and the instructions per (d) pull with metrics on and off are compared. A shm pull_blocks by
BlocksCacheKey reads the owner's published table one-sided (no round trip, no spin on a reply),
so its instruction count does not depend on timing.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))

from workers import (DECODE_ID, PREFILL_ID, WorkerGroup, blocks_key, cluster_of, desc)  # noqa: E402

import llm_datadist  # noqa: E402
from llm_datadist._bench import write_record  # noqa: E402

KiB = 1024
CASES = {"b": (1024, 64 * KiB, 5, 1), "d": (1, 4 * KiB, 300, 20)}  # blocks, block bytes, timed, warm-up
POOL = 160 << 20

# Runs in the decode: times `n` pulls of `blocks` blocks (after `warm` untimed), returns seconds each.
TIMED = """
import time
key = ld.BlocksCacheKey(1, {model})
cache = caches[{cache}]
src = list(range({blocks}))
for _ in range({warm}):
    cm.pull_blocks(key, cache, src_blocks=src, dst_blocks=src)
times = []
for _ in range({n}):
    t0 = time.perf_counter()
    cm.pull_blocks(key, cache, src_blocks=src, dst_blocks=src)
    times.append(time.perf_counter() - t0)
result = times
"""


def _pair(group: WorkerGroup, transport: str, metrics: str, tag: str, decode_wrap=(), ready_s: float = 60.0):
    opts = {"llmdd.Metrics": metrics}
    prefill = group.spawn(f"{tag}-prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True, transport=transport,
                          options=opts, pool_bytes=POOL)
    decode = group.start(f"{tag}-decode", wrap=decode_wrap).wait_ready(ready_s)
    decode.init(role="DECODER", cluster_id=DECODE_ID, transport=transport, options=opts, pool_bytes=POOL,
                deadline=ready_s)
    decode.link([cluster_of(prefill)], timeout=int(ready_s * 1000))
    caches = {}
    for model, (case, (blocks, block_bytes, _, _)) in enumerate(CASES.items()):
        d = desc(1, [blocks, block_bytes], dtype="DT_UINT8")
        caches[case] = decode.allocate_blocks(d)
        prefill.fill(prefill.allocate_blocks(d, blocks_key(PREFILL_ID, model)), model + 1)  # model id: the case's index
    return prefill, decode, caches


def _timed(decode, cache, case: str, deadline: float = 300.0) -> List[float]:
    blocks, _, n, warm = CASES[case]
    return decode.exec(TIMED.format(model=list(CASES).index(case), cache=cache.cache_id, blocks=blocks, n=n, warm=warm),
                       deadline=deadline)


def _value(case: str, times: List[float]) -> float:
    blocks, block_bytes, _, _ = CASES[case]
    med = statistics.median(times)
    return blocks * block_bytes / med / 1e9 if case == "b" else med * 1e6  # GB/s, or us


def wall_clock(transport: str, rounds: int) -> Dict[str, Any]:
    with WorkerGroup(prefix=f"mo-{transport}-") as group:
        sides = {"on": _pair(group, transport, "1", "on"), "off": _pair(group, transport, "0", "off")}
        per_round: Dict[str, Dict[str, List[float]]] = {c: {"on": [], "off": []} for c in CASES}
        for r in range(rounds):
            order = ("on", "off") if r % 4 in (0, 3) else ("off", "on")  # ABBA
            for side in order:
                _, decode, caches = sides[side]
                for case in CASES:
                    per_round[case][side].append(_value(case, _timed(decode, caches[case], case)))
        snap_on = sides["on"][1].exec("result = dd.metrics()['totals']['pull_blocks']['operations']")
        snap_off = sides["off"][1].exec("result = dd.metrics()['totals']['pull_blocks']['operations']")
    out: Dict[str, Any] = {"transport": transport, "rounds": rounds, "cases": {},
                           "pulls_counted": {"on": snap_on, "off": snap_off}}
    for case, vals in per_round.items():
        on, off = statistics.median(vals["on"]), statistics.median(vals["off"])
        ratios = [a / b for a, b in zip(vals["on"], vals["off"])]
        unit = "GB/s" if case == "b" else "us median"
        out["cases"][case] = {
            "label": "(b) pull_blocks 1024 x 64 KiB" if case == "b" else "(d) pull_blocks 1 x 4 KiB",
            "unit": unit, "on": round(on, 4), "off": round(off, 4), "on_over_off": round(on / off, 4),
            "median_round_ratio": round(statistics.median(ratios), 4),
            "off_rounds_min_max": [round(min(vals["off"]), 4), round(max(vals["off"]), 4)],
            "on_rounds": [round(v, 4) for v in vals["on"]], "off_rounds": [round(v, 4) for v in vals["off"]],
        }
    return out


def callgrind(pulls: int = 200) -> Optional[Dict[str, Any]]:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    result: Dict[str, Any] = {"pulls": pulls, "case": "(d) pull_blocks 1 x 4 KiB, shm (one-sided, no round trip)",
                              "collected": "inclusive instructions inside DataDistEngine::Pull"}
    with tempfile.TemporaryDirectory() as tmp:
        for side, flag in (("on", "1"), ("off", "0")):
            out_file = os.path.join(tmp, f"callgrind.{side}.out")
            wrap = [valgrind, "--tool=callgrind", "--collect-atstart=no",
                    "--toggle-collect=llm_datadist::DataDistEngine::Pull(*", f"--callgrind-out-file={out_file}"]
            with WorkerGroup(prefix=f"mo-cg-{side}-") as group:
                _, decode, caches = _pair(group, "shm", flag, "cg", decode_wrap=wrap, ready_s=600.0)
                blocks, _, _, _ = CASES["d"]
                decode.exec(TIMED.format(model=list(CASES).index("d"), cache=caches["d"].cache_id, blocks=blocks,
                                         n=pulls, warm=0), deadline=600.0)
                decode.send("exit")  # callgrind writes its counts as the process exits
                deadline = time.monotonic() + 120
                while decode.alive and time.monotonic() < deadline:
                    time.sleep(0.2)
            files = glob.glob(out_file + "*")
            total = 0
            for f in files:
                text = Path(f).read_text(errors="replace")
                m = re.search(r"^summary:\s*(\d+)", text, re.M) or re.search(r"^totals:\s*(\d+)", text, re.M)
                total += int(m.group(1)) if m else 0
            result[side] = {"instructions": total, "per_pull": round(total / pulls, 1)}
    if result.get("off", {}).get("per_pull"):
        result["extra_per_pull"] = round(result["on"]["per_pull"] - result["off"]["per_pull"], 1)
        result["on_over_off"] = round(result["on"]["per_pull"] / result["off"]["per_pull"], 4)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--transports", default="shm,tcp")
    p.add_argument("--no-callgrind", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    record: Dict[str, Any] = {
        "benchmark": "metrics_overhead", "command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:])),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "version": llm_datadist.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "wall_clock": [], "callgrind": None,
    }
    for transport in [t for t in args.transports.split(",") if t]:
        res = wall_clock(transport, args.rounds)
        record["wall_clock"].append(res)
        for case, c in res["cases"].items():
            print(f"{transport:4s} {c['label']:32s} on {c['on']:10.3f}  off {c['off']:10.3f} {c['unit']:10s} "
                  f"on/off {c['on_over_off']:.3f} (median round ratio {c['median_round_ratio']:.3f}; "
                  f"off rounds {c['off_rounds_min_max'][0]:.3f}..{c['off_rounds_min_max'][1]:.3f})")
    if not args.no_callgrind:
        cg = callgrind()
        record["callgrind"] = cg
        if cg:
            print(f"callgrind (d) shm: {cg['on']['per_pull']} instructions a pull with metrics, "
                  f"{cg['off']['per_pull']} without (+{cg.get('extra_per_pull')})")
    if args.out:
        write_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
