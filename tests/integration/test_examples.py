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
def test_vllm_ascend_mla_call_sequence_with_a_one_layer_cache():
    """vllm-ascend's LLMDataDistCMgrConnector MLA path: two 1-tensor blocks caches, a portless
    rank table, pull_blocks with default arguments (issue 11)."""
    done = subprocess.run([sys.executable, str(EXAMPLES / "rank_table_link.py"), "--mla"], capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1-layer MLA cache (k_normed + k_pe): bytes equal" in done.stdout, done.stdout
    assert "prefill exited 0, decode exited 0" in done.stdout, done.stdout


@pytest.mark.timeout(180)
def test_omni_infer_link_life_cycle():
    """omni-infer's llmdatadist manager: on-demand link, forced recycle by cluster id, refresh,
    sleep / wake-up, every pull byte-exact (issue 11)."""
    done = subprocess.run([sys.executable, str(EXAMPLES / "omni_infer_links.py")], capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pull 2: bytes equal after a link refresh" in done.stdout, done.stdout
    assert "omni-infer link life cycle: every pull equal" in done.stdout, done.stdout


@pytest.mark.timeout(180)
def test_disaggregated_example_matches_the_monolithic_run():
    pytest.importorskip("torch", reason="the serve demo's model needs torch")
    done = subprocess.run([sys.executable, str(EXAMPLES / "disaggregated" / "run.py"), "--prompts", "4",
                           "--max-new-tokens", "3", "--prefill", "1", "--decode", "1"],
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serve-demo passed" in done.stdout, done.stdout
