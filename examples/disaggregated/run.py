# SPDX-License-Identifier: Apache-2.0
"""Runs the disaggregated-serving example; the same as `llm-datadist serve-demo [options]`.

The code lives in the package (llm_datadist/_serve_demo/) so the installed command can run it:
model.py (the transformer and its paged KV cache), worker.py (prefill / decode worker
processes), driver.py (routing, health, relinks), demo.py (this command).
"""
import argparse
import sys

from llm_datadist._serve_demo import add_arguments, run_serve_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run_serve_demo(parser.parse_args()))
