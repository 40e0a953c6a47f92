# SPDX-License-Identifier: Apache-2.0
"""Runs the C++ test program installed with the package (allocator, pools, engine, the
upstream-style C++ API). The CUDA parts run against the fake driver in test_cuda_loader.py."""
import os
import subprocess
from pathlib import Path

import llm_datadist

BINARY = Path(llm_datadist.__file__).parent / "_testing" / "llmdd_cpp_tests"


def test_cpp_suite_passes():
    assert BINARY.exists(), f"{BINARY} missing: build with LLMDD_BUILD_CPP_TESTS=ON"
    env = {k: v for k, v in os.environ.items() if k not in ("LLMDD_CUDA_LIBRARY", "LLMDD_TEST_EXPECT_CUDA")}
    out = subprocess.run([str(BINARY)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    summary = out.stdout.strip().splitlines()[-1]
    passed = int(summary.split()[0])
    assert summary.endswith(" 0 failed") and passed >= 20, summary
