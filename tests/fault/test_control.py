# SPDX-License-Identifier: Apache-2.0
"""Controlling the shim: environment variables (read once), the control file watched at run time
(key=value settings and Dynamo's 1/0 toggle file), the process filter, silence while disarmed,
fork, and a dlsym that keeps its meaning for everything the shim does not intercept."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fault_harness import ProbeSession, clean_env, compile_program, run_probe
from llm_datadist import fault_injection as fi

Q = "dl:cuStreamQuery"


def test_environment_arms_the_process(fault_build):
    run = run_probe(fault_build, ["setup", Q, Q, Q, "dl:cuMemcpy"],
                    faults={"xid": 74, "functions": "cuStreamQuery", "after_calls": 2})
    assert run.codes() == [0, 0, 220, 220]
    lines = run.stderr.splitlines()
    assert lines[0].startswith("[llmdd-fault] pid=")
    assert "event=armed xid=74 code=220 error=CUDA_ERROR_NVLINK_UNCORRECTABLE mode=sticky" in lines[0]
    assert "source=env" in lines[0]
    assert "event=fired xid=74 code=220" in lines[1] and "fn=cuStreamQuery" in lines[1]
    assert len(lines) == 2


@pytest.mark.parametrize("faults, message", [
    ({"xid": 77}, "xid=77 is not in the XID table"),
    ({"xid": 48, "prob": "2"}, "LLMDD_FAULT_PROB: prob=2: not a valid value"),
    ({"code": 701, "sticky": "1", "transient": "2", "xdi": "48"}, "unknown variable LLMDD_FAULT_XDI"),
    ({"enabled": "1"}, "enabled without an xid or a code"),
])
def test_bad_environment_is_reported_and_leaves_the_shim_disarmed(fault_build, faults, message):
    run = run_probe(fault_build, ["setup", Q, "state"], faults=faults)
    assert message in run.stderr
    assert "event=error source=env" in run.stderr
    if "xdi" not in faults:
        assert run.codes() == [0]
        assert run.line("state").startswith("state off")


def test_control_file_changes_settings_live(fault_build, tmp_path):
    ctl_path = tmp_path / "fault.ctl"
    with fi.ControlFile(ctl_path) as ctl, ProbeSession(
            fault_build, extra={"LLMDD_FAULT_CONTROL_FILE": str(ctl_path), "LLMDD_FAULT_POLL_MS": "10"}) as probe:
        assert probe.do("setup") == "setup 0"
        assert probe.rc(Q) == 0
        generation = ctl.arm(xid=48, functions="cuStreamQuery", after_calls=1)
        assert ctl.acks()[probe.pid] == {"pid": str(probe.pid), "generation": str(generation),
                                         "state": "armed"}
        assert [probe.rc(Q), probe.rc(Q), probe.rc("dl:cuMemcpy")] == [0, 214, 214]
        ctl.disarm(pid=probe.pid)
        assert [probe.rc(Q), probe.rc("dl:cuMemcpy")] == [0, 0]
        ctl.arm(fi.FaultConfig(code=701, transient=1), pid=probe.pid)
        assert [probe.rc("rt:cudaMalloc"), probe.rc("rt:cudaMalloc")] == [701, 0]
        # Settings the shim rejects: the previous ones stay, and the writer is told why.
        ctl_path.write_text("xid=48\ngeneration=99999999999999999\nbogus=1\n")
        with pytest.raises(ValueError, match="unknown key 'bogus'"):
            ctl.wait_applied(99999999999999999, pid=probe.pid)
        assert probe.do("state").startswith("state recovered")
        stderr = probe.close()
    events = [line.split("event=")[1].split()[0] for line in stderr.splitlines()]
    assert events == ["armed", "fired", "disarmed", "armed", "fired", "recovered", "error"], stderr
    assert "source=control-file" in stderr
    assert not list(tmp_path.glob("fault.ctl.ack.*")), "the ack file is removed at exit"


def test_dynamo_toggle_file(fault_build, tmp_path):
    """Dynamo's semantics: the environment holds the XID and the starting state; a file holding
    1 or 0 overrides it both ways; a file that disappears gives the environment back."""
    toggle = tmp_path / "cuda_fault_enabled"
    faults = {"xid": 79, "enabled": 0, "control_file": toggle, "poll_ms": 10}
    ctl = fi.ControlFile(toggle)
    with ProbeSession(fault_build, faults=faults) as probe:
        assert probe.do("setup") == "setup 0"
        assert probe.rc(Q) == 0
        ctl.toggle(True)
        assert probe.do("until:999:" + Q).startswith(f"until {Q} 999")
        ctl.toggle(False)
        assert probe.do("until:0:" + Q).startswith(f"until {Q} 0")
        ctl.toggle(True)
        assert probe.do("until:999:" + Q).startswith(f"until {Q} 999")
        ctl.remove()  # back to the environment: disarmed
        assert probe.do("until:0:" + Q).startswith(f"until {Q} 0")
        stderr = probe.close()
    assert stderr.count("event=armed xid=79") == 2 and stderr.count("event=disarmed") == 2

    # A file that exists at start wins over the environment (here: "0" over an armed env).
    toggle.write_text("0\n")
    run = run_probe(fault_build, ["setup", Q], faults={"xid": 79, "control_file": toggle})
    assert run.codes() == [0] and run.stderr == ""


def test_disarmed_shim_is_silent_and_changes_nothing(fault_build, tmp_path):
    ops = ["setup", "rt:cudaMalloc", "rt:__cudaLaunchKernel", "pa:cuMemcpyAsync", "dl:cuGraphLaunch",
           "kernels", "devcount", "lasterr"]
    plain = run_probe(fault_build, ops, shim=False)
    absent_file = tmp_path / "never-created.ctl"
    for faults in ({}, {"xid": 48, "enabled": 0}, {"control_file": absent_file}):
        run = run_probe(fault_build, ops, faults=faults)
        assert run.lines == plain.lines
        assert run.stderr == "", faults
    # Python itself, under the shim, disarmed.
    proc = subprocess.run([sys.executable, "-c", "import llm_datadist, json; print('ok')"],
                          capture_output=True, text=True, env=clean_env(fault_build), timeout=60)
    assert proc.stdout == "ok\n" and proc.stderr == ""


def test_process_filter(fault_build):
    armed = {"xid": 48, "functions": "cuStreamQuery"}
    other = run_probe(fault_build, ["setup", Q], faults={**armed, "process": "python*,nvidia-smi"})
    assert other.codes() == [0] and other.stderr == ""
    mine = run_probe(fault_build, ["setup", Q], faults={**armed, "process": "python*,fault_pro*"})
    assert mine.codes() == [214]


def test_forked_child_keeps_watching_the_control_file(fault_build, tmp_path):
    ctl_path = tmp_path / "fork.ctl"
    script = textwrap.dedent(f"""
        import ctypes, os, sys, time
        drv = ctypes.CDLL({str(fault_build.driver)!r}, mode=ctypes.RTLD_GLOBAL)
        query = ctypes.CDLL(None).cuStreamQuery   # the shim's hook, through the global scope
        query.argtypes = [ctypes.c_void_p]
        assert drv.cuInit(0) == 0
        pid = os.fork()
        if pid == 0:
            print("child", os.getpid(), flush=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and query(None) != 214:
                time.sleep(0.005)
            os._exit(0 if query(None) == 214 else 1)
        _, status = os.waitpid(pid, 0)
        # The parent's own poll thread applies the file on its own schedule (every poll_ms):
        # the child may have seen the fault first.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and query(None) != 214:
            time.sleep(0.005)
        print("parent", query(None), os.waitstatus_to_exitcode(status), flush=True)
    """)
    ctl = fi.ControlFile(ctl_path)
    env = clean_env(fault_build, faults={"control_file": ctl_path, "poll_ms": 10})
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    child = int(proc.stdout.readline().split()[1])
    ctl.arm(xid=48, pid=child)
    out, err = proc.communicate(timeout=30)
    # The parent applied the same file (its own poll thread) and the child saw the fault.
    assert out.split() == ["parent", "214", "0"], out + err


def test_dlsym_keeps_its_meaning_for_names_it_does_not_intercept(fault_build, tmp_path):
    """RTLD_NEXT is relative to the caller; the shim's dlsym must not make it relative to itself."""
    (tmp_path / "a.c").write_text(textwrap.dedent("""
        #define _GNU_SOURCE
        #include <dlfcn.h>
        int probe_value(void) { return 1; }
        int next_value(void) {
          int (*f)(void) = (int (*)(void))dlsym(RTLD_NEXT, "probe_value");
          return f ? f() : -1;
        }
    """))
    (tmp_path / "b.c").write_text("int probe_value(void) { return 2; }\n")
    (tmp_path / "main.c").write_text(textwrap.dedent("""
        #define _GNU_SOURCE
        #include <dlfcn.h>
        #include <stdio.h>
        int next_value(void);
        int main(void) {
          int (*f)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "probe_value");
          void *self = dlopen(NULL, RTLD_NOW);
          int (*g)(void) = (int (*)(void))dlsym(self, "probe_value");
          printf("%d %d %d %d\\n", next_value(), f ? f() : -1, g ? g() : -1,
                 dlsym(RTLD_DEFAULT, "no_such_symbol_anywhere") == NULL);
          return 0;
        }
    """))
    for name in ("a", "b"):
        compile_program([tmp_path / f"{name}.c"], tmp_path / f"lib{name}.so", ["-shared", "-fPIC"])
    exe = compile_program([tmp_path / "main.c"], tmp_path / "main",
                          [f"-L{tmp_path}", "-Wl,--no-as-needed", "-la", "-lb", f"-Wl,-rpath,{tmp_path}"])
    plain = subprocess.run([str(exe)], capture_output=True, text=True, env=clean_env(fault_build, shim=False))
    shimmed = subprocess.run([str(exe)], capture_output=True, text=True, env=clean_env(fault_build))
    assert plain.stdout == "2 1 1 1\n"
    assert shimmed.stdout == plain.stdout, shimmed.stderr
    assert shimmed.stderr == ""
