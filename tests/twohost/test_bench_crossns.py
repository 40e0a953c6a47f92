# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist bench --crossns --quick`: our rows between two network namespaces, every byte
verified, and the bytes counted on the decode's veth (they did cross it). Peers are not run here
(not installed in CI); the recorded run under benchmarks/results/ has them."""
import json
import subprocess
import sys

import pytest

from llm_datadist import _core
from llm_datadist._bench import netns

pytestmark = pytest.mark.timeout(300)


def test_bench_crossns_quick(tmp_path):
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    out_json = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "llm_datadist.cli", "bench", "--quick", "--transport", "none", "--placement", "host",
           "--groups", "reference", "--ceilings", "none", "--extras", "none", "--peers", "none", "--crossns",
           "--out", str(out_json)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    log = f"stdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-3000:]}"
    assert out.returncode == 0, log
    assert "== across network namespaces" in out.stdout, log
    x = json.loads(out_json.read_text())["extras"]["crossns"]
    assert "skipped" not in x and x["errors"] == 0, x.get("notes")
    ours = [r for r in x["rows"] if r["system"] == "llm_datadist"]
    # our tcp always; our ucx where the core has UCX (forced between the namespaces)
    transports = {"tcp", "ucx"} if _core.ucx_info()["available"] else {"tcp"}
    assert {r["transport"] for r in ours} == transports, ours
    for transport in transports:
        rows = [r for r in ours if r["transport"] == transport]
        assert {r["case"] for r in rows} == {"a", "b", "c", "d", "llama8b_256t"}, rows
        assert all(r["verified"] and not r["error"] for r in rows), rows
        system = x["systems"][f"llm_datadist/{transport}"]
        assert system["crossed_veth"] and system["veth_rx_bytes"] >= system["requested_bytes"], system
    assert x["topology"]["prefill"]["ip"] != x["topology"]["decode"]["ip"]
