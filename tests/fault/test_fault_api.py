# SPDX-License-Identifier: Apache-2.0
"""llm_datadist.fault_injection and `llm-datadist fault`: configuration, environments, the
in-process context manager, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fault_harness import clean_env
from llm_datadist import cli
from llm_datadist import fault_injection as fi


def test_shim_is_installed_with_the_package():
    path = Path(fi.shim_path())
    assert path.name == "libllmdd_cuda_fault.so" and path.parent.name == "_testing"
    assert path.is_file()


def test_fault_config_validates_like_the_rest_of_the_api():
    with pytest.raises(ValueError, match="needs an xid or a code"):
        fi.FaultConfig()
    with pytest.raises(ValueError, match="XID 7 is not in the fault table"):
        fi.FaultConfig(xid=7)
    with pytest.raises(TypeError):
        fi.FaultConfig(xid="48")
    with pytest.raises(TypeError):
        fi.FaultConfig(xid=48, after_calls=True)
    with pytest.raises(ValueError, match="prob=1.5"):
        fi.FaultConfig(code=701, prob=1.5)
    with pytest.raises(ValueError, match="cannot contain"):
        fi.FaultConfig(xid=48, functions="cuMemcpy*;cuInit")
    assert fi.FaultConfig(enabled=False).settings() == {"enabled": "0"}


def test_settings_and_environment():
    cfg = fi.FaultConfig(xid=48, transient=2, after_calls=10, prob=0.5, seed=3, device=1,
                         functions=["cuMemcpy*", "cudaMemcpy*"], delay_ms=5, control_file="/tmp/x.ctl",
                         log_json="/tmp/x.jsonl", quiet=True, process="python*")
    assert cfg.settings() == {"enabled": "1", "xid": "48", "transient": "2", "after_calls": "10",
                              "prob": "0.5", "seed": "3", "device": "1",
                              "functions": "cuMemcpy*,cudaMemcpy*", "delay_ms": "5"}
    assert cfg.settings_text(7).endswith("delay_ms=5\ngeneration=7\n")
    env = cfg.to_env()
    assert env["LLMDD_FAULT_XID"] == "48" and env["LLMDD_FAULT_FUNCTIONS"] == "cuMemcpy*,cudaMemcpy*"
    assert env["LLMDD_FAULT_CONTROL_FILE"] == "/tmp/x.ctl" and env["LLMDD_FAULT_QUIET"] == "1"
    assert env["LLMDD_FAULT_PROCESS"] == "python*" and env["LLMDD_FAULT_LOG_JSON"] == "/tmp/x.jsonl"

    base = {"PATH": "/bin", "LD_PRELOAD": "/lib/other.so", "LLMDD_FAULT_XID": "79",
            "LLMDD_FAULT_SHIM": "/keep/me.so"}
    full = fi.env_for(fi.FaultConfig(code=701), base=base, shim="/s/libllmdd_cuda_fault.so")
    assert full["LD_PRELOAD"] == "/s/libllmdd_cuda_fault.so:/lib/other.so"
    assert "LLMDD_FAULT_XID" not in full, "stale settings from the parent are dropped"
    assert full["LLMDD_FAULT_CODE"] == "701" and full["LLMDD_FAULT_SHIM"] == "/keep/me.so"
    again = fi.env_for(None, base=full, shim="/s/libllmdd_cuda_fault.so")
    assert again["LD_PRELOAD"] == "/s/libllmdd_cuda_fault.so:/lib/other.so", "not preloaded twice"


def test_armed_needs_the_shim():
    if fi.under_shim():
        pytest.skip("the test process itself runs under the shim")
    assert fi.shim_state() is None
    with pytest.raises(RuntimeError, match="does not run under the CUDA fault shim"):
        with fi.armed(xid=48):
            pass


def test_armed_block_in_a_process_under_the_shim(fault_build):
    script = textwrap.dedent(f"""
        import ctypes, json
        from llm_datadist import fault_injection as fi
        drv = ctypes.CDLL({str(fault_build.driver)!r}, mode=ctypes.RTLD_GLOBAL)
        query = ctypes.CDLL(None).cuStreamQuery
        query.argtypes = [ctypes.c_void_p]
        drv.cuInit(0)
        out = [query(None), fi.shim_state()["state"]]
        with fi.armed(fi.FaultConfig(xid=48)):
            out += [query(None), query(None), fi.shim_state()]
            with fi.armed(code=909, transient=1):
                out += [query(None), query(None)]
            out.append(query(None))  # the outer settings again: a new episode, fires at once
        out += [query(None), fi.shim_state()["state"]]
        try:
            with fi.armed(xid=48, functions="a;b"):
                pass
        except ValueError as e:
            out.append("rejected")
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=clean_env(fault_build), timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out[:2] == [0, "off"]
    assert out[2:4] == [214, 214]
    assert out[4] == {"state": "fired", "last_xid": 48, "last_code": 214, "injections": 2}
    assert out[5:7] == [909, 0]
    assert out[7] == 214
    assert out[8:] == [0, "off", "rejected"]


def test_cli_list_and_shim_path(capsys):
    assert cli.main(["fault", "--list"]) == 0
    text = capsys.readouterr().out
    for row in fi.xid_table():
        assert f"{row.xid:>4} {row.code:>5}  {row.error}" in text
    assert cli.main(["fault", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[4]["xid"] == 48 and rows[4]["runtime_error"] == "cudaErrorECCUncorrectable"
    assert cli.main(["fault", "--shim-path"]) == 0
    assert capsys.readouterr().out.strip() == fi.shim_path()


def test_cli_errors(capsys):
    assert cli.main(["fault", "--xid", "48"]) == 2
    assert "nothing to run" in capsys.readouterr().err
    assert cli.main(["fault", "--xid", "77", "--", "true"]) == 2
    assert "XID 77 is not in the fault table" in capsys.readouterr().err
    assert cli.main(["fault", "--code", "701", "--", "no-such-command-anywhere"]) == 127


def test_cli_runs_a_command_under_the_shim(fault_build, tmp_path):
    log = tmp_path / "events.jsonl"
    env = clean_env(fault_build, shim=False)
    proc = subprocess.run(
        [sys.executable, "-m", "llm_datadist.cli", "fault", "--xid", "95", "--after-calls", "2",
         "--functions", "cuStreamQuery", "--log-json", str(log), "--",
         str(fault_build.probe), "setup", "dl:cuStreamQuery", "dl:cuStreamQuery", "dl:cuStreamQuery",
         "state"],
        capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == ["dl:cuStreamQuery 0", "dl:cuStreamQuery 0",
                                            "dl:cuStreamQuery 214",
                                            "state fired xid=95 code=214 injections=1"]
    assert [json.loads(l)["event"] for l in log.read_text().splitlines()] == ["armed", "fired", "inject"]
    # The command's exit status comes back.
    rc = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "fault", "--xid", "48", "--",
                         sys.executable, "-c", "raise SystemExit(3)"], env=env, timeout=60).returncode
    assert rc == 3


def test_importing_does_not_import_torch():
    code = ("import sys, llm_datadist.fault_injection, llm_datadist.retry, llm_datadist.cli\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
