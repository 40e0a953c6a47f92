# SPDX-License-Identifier: Apache-2.0
"""Transfer benchmark: the reference cases of peer_baseline.md, pulled between two processes,
beside the memcpy / CMA ceilings measured in the same run.

    python benchmarks/bench_transfer.py [--transport shm,tcp] [--placement host[,device]]
        [--cases a,b,c,d] [--iters N] [--warmup N] [--check | --no-check]
        [--out benchmarks/results/<name>.json]

A thin script over `llm_datadist._bench.transfer` (installed with the package, so that
`llm-datadist bench` can run it too): see that module's docstring, or `--help`, for the cases,
the ceilings and the JSON record. The whole suite (sweeps, model-shaped cases, extras, peers,
plot) is `llm-datadist bench`.
"""
import sys

from llm_datadist._bench.transfer import *  # noqa: F401,F403 - bench_transfer.X stays importable
from llm_datadist._bench.transfer import main

if __name__ == "__main__":
    sys.exit(main(script=__file__))
