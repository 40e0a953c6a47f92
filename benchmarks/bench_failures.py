# SPDX-License-Identifier: Apache-2.0
"""How fast failures are noticed, and what links cost.

    python benchmarks/bench_failures.py [--repeats 5] [--sync-kv-timeout-ms 500] [--out F]

A thin script over `llm_datadist._bench.failures` (installed with the package; `llm-datadist
bench` runs the same measures): see that module for what is measured.
"""
import sys

from llm_datadist._bench.failures import main

if __name__ == "__main__":
    sys.exit(main(script=__file__))
