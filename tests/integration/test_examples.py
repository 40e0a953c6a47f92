# SPDX-License-Identifier: Apache-2.0
"""The examples run as a user runs them from a clone, and say they succeeded: a broken example
is a bug report waiting to happen."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.timeout(180)
def test_rank_table_link_example_pulls_equal_bytes():
    done = subprocess.run([sys.executable, str(EXAMPLES / "rank_table_link.py")], capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bytes equal" in done.stdout and "prefill exited 0, decode exited 0" in done.stdout, done.stdout


@pytest.mark.timeout(180)
def test_disaggregated_example_matches_the_monolithic_run():
    pytest.importorskip("torch", reason="the serve demo's model needs torch")
    done = subprocess.run([sys.executable, str(EXAMPLES / "disaggregated" / "run.py"), "--prompts", "4",
                           "--max-new-tokens", "3", "--prefill", "1", "--decode", "1"],
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serve-demo passed" in done.stdout, done.stdout
