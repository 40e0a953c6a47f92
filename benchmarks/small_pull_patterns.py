# SPDX-License-Identifier: Apache-2.0
"""Latency of one small pull_blocks as a new user writes it (strided destinations, a second
cache, fresh processes) beside the bench's (d); see llm_datadist/_bench/latency.py.

    python benchmarks/small_pull_patterns.py [--pulls 1000] [--rounds 3] [--transport shm|tcp]
        [--patterns fixed,strided,strided_warm] [--out benchmarks/results/<name>.json]
"""
import sys

from llm_datadist._bench.latency import main

if __name__ == "__main__":
    sys.exit(main())
