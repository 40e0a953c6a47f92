# SPDX-License-Identifier: Apache-2.0
"""Upstream's C++ header (include/llm_datadist/llm_datadist.h:26-106 and the ge names it uses:
ge::Status, ge::SUCCESS, ge::AscendString, ge::DataType with CANN's numbers) is what xLLM-style
client code is written against. tests/cpp/ge_client/xllm_style_client.cc is such code, built
against the public headers only; this runs it: two engines link, register one-tensor caches,
PushKvBlocks with tensor_num_per_layer=1 (and with the default ext_param), compare every byte,
refuse the sub-byte types by number, unlink."""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from native_programs import native_program  # noqa: E402

# One line per check the program makes; a program that stopped early prints fewer.
EXPECTED_CHECKS = 58


def test_xllm_style_client_links_pushes_and_unlinks():
    binary = native_program("llmdd_ge_client")
    env = {k: v for k, v in os.environ.items() if k not in ("LLMDD_CUDA_LIBRARY", "LLMDD_TEST_EXPECT_CUDA")}
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120, env=env)
    lines = out.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert out.returncode == 0 and not failed, "\n".join(failed) + out.stdout[-3000:] + out.stderr[-3000:]
    assert lines[-1] == "0 failed", out.stdout[-3000:]
    checks = [line for line in lines if line.startswith("ok ")]
    assert len(checks) == EXPECTED_CHECKS, f"{len(checks)} checks ran:\n" + out.stdout[-3000:]
    for name in ("DT_BF16", "DT_FLOAT8_E4M3FN", "DT_HIFLOAT8", "DT_COMPLEX32", "DT_COMPLEX128"):
        assert f"ok {name}: every byte of the decode's cache after the push" in checks, name
    assert "ok UnlinkLlmClusters" in checks and "ok PushKvBlocks after the unlink" in checks
