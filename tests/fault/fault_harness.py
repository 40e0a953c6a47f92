# SPDX-License-Identifier: Apache-2.0
"""Shared by tests/fault: builds what the fault-injection tests run: the fake CUDA driver and runtime
(fault_injection/fake_cuda) and the C probe (tests/fault/fault_probe.c) linked against that
runtime, and runs the probe under the installed shim (llm_datadist.fault_injection.shim_path()).

Nothing here needs a GPU. Each probe run is a fresh process: the shim's state is per process.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_cuda import build_fake_cuda, compile_shared, find_c_compiler  # noqa: E402

from llm_datadist import fault_injection as fi  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUNTIME_SOURCE = REPO / "fault_injection" / "fake_cuda" / "fake_cuda_runtime.c"
PROBE_SOURCE = Path(__file__).resolve().parent / "fault_probe.c"


@dataclass(frozen=True)
class FaultBuild:
    driver: Path   # fake libcuda.so.1
    runtime: Path  # fake libcudart.so.13
    probe: Path    # the probe, linked against the fake runtime
    shim: Path     # the installed libllmdd_cuda_fault.so


def compile_program(sources: Sequence[Path], output: Path, args: Sequence[str] = ()) -> Path:
    compiler = find_c_compiler()
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build the fault-injection test programs")
    cmd = [compiler, "-O1", "-o", str(output), *map(str, sources), *args, "-ldl", "-pthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {output.name} failed ({' '.join(cmd)}):\n{proc.stderr}")
    return output


def build_all(work: Path) -> FaultBuild:
    """Compiles the fakes and the probe into `work` (the session fixture in conftest.py)."""
    shim = Path(fi.shim_path())  # the installed one: the CMake target is part of what is tested
    driver = build_fake_cuda(work)
    version_script = work / "libcudart.map"
    version_script.write_text("libcudart.so.13 { global: *; };\n")  # versioned like the real one
    runtime = compile_shared([RUNTIME_SOURCE], work / "libcudart.so.13",
                             ["-Wl,-soname,libcudart.so.13", f"-Wl,--version-script={version_script}",
                              "-ldl"])
    probe = compile_program([PROBE_SOURCE], work / "fault_probe",
                            [f"-L{work}", "-l:libcudart.so.13", f"-Wl,-rpath,{work}"])
    return FaultBuild(driver=driver, runtime=runtime, probe=probe, shim=shim)


def clean_env(build: FaultBuild, *, shim: bool = True, faults: Optional[Dict[str, object]] = None,
              devices: int = 2, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a probe run: no inherited LLMDD_*/LD_PRELOAD, the fake driver, the shim
    preloaded (unless shim=False), and LLMDD_FAULT_<KEY> for each faults key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMDD_") and k != "LD_PRELOAD"}
    env["LLMDD_CUDA_LIBRARY"] = str(build.driver)
    env["LLMDD_FAKE_CUDA_DEVICES"] = str(devices)
    if shim:
        env["LD_PRELOAD"] = str(build.shim)
    for key, value in (faults or {}).items():
        env["LLMDD_FAULT_" + key.upper()] = str(value)
    env.update(extra or {})
    return env


@dataclass
class ProbeRun:
    lines: List[str]
    stderr: str
    returncode: int

    def rcs(self) -> List[Tuple[str, int]]:
        """(op, rc) for every plain call line."""
        out = []
        for line in self.lines:
            parts = line.split()
            if len(parts) == 2 and ":" in parts[0]:
                out.append((parts[0], int(parts[1])))
        return out

    def codes(self, op: Optional[str] = None) -> List[int]:
        return [rc for name, rc in self.rcs() if op is None or name == op]

    def line(self, prefix: str) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting with {prefix!r} in {self.lines}")


def run_probe(build: FaultBuild, ops: Sequence[str], *, shim: bool = True,
              faults: Optional[Dict[str, object]] = None, extra: Optional[Dict[str, str]] = None,
              devices: int = 2, timeout: float = 30) -> ProbeRun:
    proc = subprocess.run([str(build.probe), *ops], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(build, shim=shim, faults=faults, extra=extra, devices=devices))
    assert proc.returncode == 0, f"probe failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return ProbeRun(proc.stdout.splitlines(), proc.stderr, proc.returncode)


class ProbeSession:
    """An interactive probe: ops written to its stdin one at a time, each answer read back."""

    def __init__(self, build: FaultBuild, **env_args) -> None:
        self.proc = subprocess.Popen([str(build.probe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env=clean_env(build, **env_args))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def do(self, op: str, timeout: float = 15.0) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(op + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the probe did not answer {op!r} within {timeout} s"
        line = self.proc.stdout.readline().strip()
        assert line, f"the probe exited while running {op!r}: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return line

    def rc(self, op: str) -> int:
        return int(self.do(op).split()[-1])

    def close(self) -> str:
        """Ends the probe; returns its stderr."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stderr.read()

    def __enter__(self) -> "ProbeSession":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.close()

