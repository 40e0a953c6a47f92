# SPDX-License-Identifier: Apache-2.0
"""Same-run before/after comparison of two builds with `llm-datadist bench`.

    python benchmarks/compare_builds.py --before /path/venv-main/bin/llm-datadist \
        --after /path/venv-new/bin/llm-datadist --rounds 3 --out benchmarks/results/x.json \
        -- --transport shm,tcp --placement host --groups reference,cache --extras none --peers none

The two builds run alternately (before, after, before, after, ...) so that both see the same
machine load; each row's medians are pooled over the rounds and the after/before ratio of the
pooled medians is reported per row. Rows are matched by (system, case, placement, transport, op).
This machine kind is shared and noisy: read a ratio as a regression only when it is outside the
spread the same build shows between its own rounds (also reported).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

RowKey = Tuple[str, str, str, str, str]


def row_key(row: Dict) -> RowKey:
    return (row["system"], row["case"], row["placement"], row["transport"], row["op"])


def run_bench(exe: str, args: List[str], out: str) -> Dict:
    subprocess.run([exe, "bench", *args, "--out", out], check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="llm-datadist of the baseline build")
    ap.add_argument("--after", required=True, help="llm-datadist of the changed build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then the bench's arguments")
    opts = ap.parse_args()
    bench_args = [a for a in opts.bench_args if a != "--"]

    medians: Dict[str, Dict[RowKey, List[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.rounds):
            for label, exe in (("before", opts.before), ("after", opts.after)):
                record = run_bench(exe, bench_args, os.path.join(tmp, f"{label}{r}.json"))
                for row in record["rows"]:
                    if row.get("error") or not row.get("median_us"):
                        continue
                    medians[label].setdefault(row_key(row), []).append(row["median_us"])
                print(f"round {r + 1}/{opts.rounds} {label}: {len(record['rows'])} rows", file=sys.stderr)

    rows = []
    for key, before in medians["before"].items():
        after = medians["after"].get(key)
        if not after or key[0] != "llm_datadist":
            continue
        b, a = statistics.median(before), statistics.median(after)
        # the same build's own spread between rounds: max/min of its round medians
        spread = max(max(before) / min(before), max(after) / min(after))
        rows.append({"system": key[0], "case": key[1], "placement": key[2], "transport": key[3], "op": key[4],
                     "before_median_us": round(b, 2), "after_median_us": round(a, 2),
                     "after_over_before": round(a / b, 3), "own_round_spread": round(spread, 3),
                     "before_rounds_us": before, "after_rounds_us": after})
    record = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "rounds": opts.rounds, "bench_args": bench_args, "rows": rows}
    with open(opts.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"{'case':<20} {'transport':<6} {'op':<12} {'before us':>11} {'after us':>11} {'ratio':>6} {'spread':>6}")
    for r in rows:
        print(f"{r['case']:<20} {r['transport']:<6} {r['op']:<12} {r['before_median_us']:>11.2f} "
              f"{r['after_median_us']:>11.2f} {r['after_over_before']:>6.3f} {r['own_round_spread']:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
