# SPDX-License-Identifier: Apache-2.0
"""Runs the C++ test program (allocator, pools, engine, the upstream-style C++ API), built from
tests/cpp against the installed core (tests/native_programs.py). The CUDA parts run against the
fake driver in test_cuda_loader.py."""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from native_programs import native_program  # noqa: E402


def test_cpp_suite_passes():
    binary = native_program("llmdd_cpp_tests")
    env = {k: v for k, v in os.environ.items() if k not in ("LLMDD_CUDA_LIBRARY", "LLMDD_TEST_EXPECT_CUDA")}
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    summary = out.stdout.strip().splitlines()[-1]
    passed = int(summary.split()[0])
    assert summary.endswith(" 0 failed") and passed >= 20, summary
