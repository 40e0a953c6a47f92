# SPDX-License-Identifier: Apache-2.0
import subprocess
import sys


def test_demo_passes_and_checks_bytes():
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "demo"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo passed" in out.stdout
    assert out.stdout.count("OK  ") >= 5 and "FAIL" not in out.stdout
