# SPDX-License-Identifier: Apache-2.0
"""Builds the fake CUDA driver (fault_injection/fake_cuda) for tests on machines without a GPU.

    lib = build_fake_cuda(tmp_path_factory.mktemp("fake_cuda"))
    env = fake_cuda_env(lib, devices=2, mem_limit=1 << 20)
    subprocess.run([...], env={**os.environ, **env})

The library is compiled once per test session (cached by source path and mtime); a machine
without a C compiler skips the calling test with the reason. The loader state in
llm_datadist is process-global, so point subprocesses, not the test process, at the fake.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional, Union

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_CUDA_SOURCE = REPO_ROOT / "fault_injection" / "fake_cuda" / "fake_cuda_driver.c"

# (source path, mtime) -> built library; one build per session.
_BUILT: Dict[tuple, Path] = {}


def find_c_compiler() -> Optional[str]:
    """The C compiler to use ($CC, then cc, gcc, clang), or None."""
    candidates = [os.environ.get("CC"), "cc", "gcc", "clang"]
    for candidate in candidates:
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def compile_shared(sources, output: Path, extra_args=()) -> Path:
    """Compiles C sources into a shared library, skipping the test when no compiler exists."""
    compiler = find_c_compiler()
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build the fake CUDA driver")
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-O1", "-shared", "-fPIC", "-o", str(output),
           *[str(s) for s in sources], *extra_args, "-pthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {output.name} failed ({' '.join(cmd)}):\n{proc.stderr}")
    return output


def build_fake_cuda(tmpdir: Union[str, os.PathLike]) -> Path:
    """Compiles the fake driver into <tmpdir>/libcuda.so.1 (once per session); returns its path."""
    key = (str(FAKE_CUDA_SOURCE), FAKE_CUDA_SOURCE.stat().st_mtime_ns)
    built = _BUILT.get(key)
    if built is not None and built.exists():
        return built
    lib = compile_shared([FAKE_CUDA_SOURCE], Path(tmpdir) / "libcuda.so.1")
    _BUILT[key] = lib
    return lib


def fake_cuda_env(lib_path: Union[str, os.PathLike], devices: int = 1,
                  mem_limit: Optional[int] = None) -> Dict[str, str]:
    """Environment variables that make llm_datadist load the fake driver in a subprocess."""
    env = {
        "LLMDD_CUDA_LIBRARY": str(lib_path),
        "LLMDD_FAKE_CUDA_DEVICES": str(int(devices)),
    }
    if mem_limit is not None:
        env["LLMDD_FAKE_CUDA_MEM_LIMIT"] = str(int(mem_limit))
    return env


# The child processes' config on the CUDA backend, for tests that run Python source in a
# subprocess pointed at the fake: config(listen=None, transport="auto") -> init options with a
# 16 MiB device pool and a 16 MiB host pool.
CUDA_CHILD_CONFIG = '''
import json
import llm_datadist as ld
def config(listen=None, transport="auto"):
    cfg = ld.LLMConfig(); cfg.device_id = 0; cfg.enable_cache_manager = True; cfg.device_backend = "cuda"
    cfg.mem_pool_cfg = json.dumps({"memory_size": 16 << 20})
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 16 << 20})
    if listen: cfg.listen_ip_info = listen
    options = cfg.generate_options(); options["llmdd.Transport"] = transport
    return options
'''
