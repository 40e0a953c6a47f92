# SPDX-License-Identifier: Apache-2.0
"""Page-allocator cost against the number of free ranges (see benchmarks/cpp/bench_page_allocator.cc).

    python benchmarks/bench_allocator.py [--iterations N] [--out benchmarks/results/allocator_scaling.json]

Prints a table and, with --out, records the run (command, machine, results) as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import llm_datadist
from llm_datadist._bench import write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from native_programs import native_program  # noqa: E402  (installed, or built from this clone)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    binary = native_program("llmdd_bench_page_allocator")
    out = subprocess.run([str(binary), str(args.iterations)], capture_output=True, text=True, check=True, timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    print(f"{'free ranges':>12} {'fit ns':>8} {'miss ns':>8} {'log2(F)':>8}")
    for r in rows:
        print(f"{r['free_ranges']:>12} {r['fit_ns_per_alloc_free']:>8.1f} {r['miss_ns_per_alloc_free']:>8.1f} "
              f"{math.log2(r['free_ranges']):>8.1f}")
    if args.out:
        record = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "processor": platform.processor()},
            "llm_datadist": llm_datadist.__version__,
            "results": rows,
        }
        write_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
