# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist serve-demo`: disaggregated serving of a small transformer (xPyD) through
llm_datadist, checked token for token against the same model run in one process.

    model.py   the transformer (seeded random weights) and its paged KV cache
    worker.py  a prefill or decode worker process (uses llm_datadist.integrations' connector)
    driver.py  Cluster: starts the workers, routes requests, per-prefill health, relinks
    demo.py    the command: run, compare with the monolithic run, print the timing split
"""
from .demo import add_arguments, run_serve_demo

__all__ = ["add_arguments", "run_serve_demo"]
