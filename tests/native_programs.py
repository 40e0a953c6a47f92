# SPDX-License-Identifier: Apache-2.0
"""The C++ programs the tests (and benchmarks/bench_allocator.py) run, which the wheel leaves out.

    binary = native_program("llmdd_cpp_tests")

A build configured with `-C cmake.define.LLMDD_BUILD_CPP_TESTS=ON` installs them under
llm_datadist/_testing (.ci/sanitize.sh does, so they carry the sanitizers); that copy is used when
present. Otherwise each is compiled here from this clone's sources against the installed
libllm_datadist.so, once, into build/native-programs/<hash of sources, headers, library and
command> (a temporary folder when the clone is read-only). No compiler: the calling test skips.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
CSRC = REPO_ROOT / "csrc"


@dataclass(frozen=True)
class Program:
    sources: Tuple[str, ...]         # globs relative to the clone
    private_headers: bool            # the core's own headers (csrc/) besides the public ones
    warnings: Tuple[str, ...] = ()
    include_dirs: Tuple[str, ...] = ()  # more -I, relative to the clone
    # programs this one runs from its own directory (built next to it)
    companions: Tuple[str, ...] = ()


# The same programs CMakeLists.txt builds under LLMDD_BUILD_CPP_TESTS.
PROGRAMS: Dict[str, Program] = {
    # allocator, pools, engine, the upstream-style C++ API, the CUDA loader
    "llmdd_cpp_tests": Program(("tests/cpp/*.cc",), private_headers=True, companions=("llmdd_ucx_peer",)),
    # the far end of the C++ UCX tests, run by llmdd_cpp_tests from its own directory
    "llmdd_ucx_peer": Program(("tests/cpp/ucx_peer/ucx_peer.cc",), private_headers=True, include_dirs=("tests/cpp",)),
    "llmdd_bench_ucx_get": Program(("benchmarks/cpp/bench_ucx_get.cc",), private_headers=True,
                                   include_dirs=("tests/cpp",), companions=("llmdd_ucx_peer",)),
    # client code against upstream's names, built as a user builds it: public headers only
    "llmdd_ge_client": Program(("tests/cpp/ge_client/xllm_style_client.cc",), private_headers=False,
                               warnings=("-Wall", "-Wextra", "-Wpedantic")),
    "llmdd_bench_page_allocator": Program(("benchmarks/cpp/bench_page_allocator.cc",), private_headers=True),
}


def package_dir() -> Path:
    import llm_datadist
    return Path(llm_datadist.__file__).resolve().parent


def installed_program(name: str) -> Optional[Path]:
    path = package_dir() / "_testing" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_cxx_compiler() -> Optional[str]:
    """$CXX, then c++, g++, clang++; None when there is none."""
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _sources(program: Program) -> List[Path]:
    found: List[Path] = []
    for pattern in program.sources:
        found += sorted(REPO_ROOT.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no sources match {program.sources} under {REPO_ROOT}")
    return found


def _cache_root() -> Path:
    root = REPO_ROOT / "build" / "native-programs"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / f"llmdd-native-programs-{os.getuid()}"


def _compile(compiler: str, name: str, program: Program, out_dir: Path) -> Path:
    lib_dir = package_dir()
    includes = ["-I", str(CSRC / "include")] + (["-I", str(CSRC)] if program.private_headers else [])
    for extra in program.include_dirs:
        includes += ["-I", str(REPO_ROOT / extra)]
    common = [compiler, "-std=c++17", "-O1", *program.warnings, *includes]
    objects_dir = out_dir / f"{name}.obj"
    objects_dir.mkdir(parents=True, exist_ok=True)

    def compile_one(source: Path) -> Path:
        obj = objects_dir / (source.stem + ".o")
        cmd = [*common, "-c", str(source), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {source} failed ({' '.join(cmd)}):\n{proc.stderr}")
        return obj

    sources = _sources(program)
    with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as pool:
        objects = list(pool.map(compile_one, sources))
    binary = out_dir / name
    partial = out_dir / f".{name}.{os.getpid()}"
    cmd = [*common, *map(str, objects), "-o", str(partial), "-L", str(lib_dir), "-l:libllm_datadist.so",
           f"-Wl,-rpath,{lib_dir}", "-pthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"linking {name} failed ({' '.join(cmd)}):\n{proc.stderr}")
    os.replace(partial, binary)      # whole or absent: a concurrent session sees no half-written file
    return binary


def _fingerprint(compiler: str, program: Program) -> str:
    digest = hashlib.sha256()
    library = package_dir() / "libllm_datadist.so"
    stat = library.stat()
    digest.update(f"{compiler}\0{program}\0{library}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for companion in program.companions:
        digest.update(_fingerprint(compiler, PROGRAMS[companion]).encode())
    headers = sorted(CSRC.rglob("*.h")) + sorted((REPO_ROOT / "tests" / "cpp").rglob("*.h"))
    for path in [*_sources(program), *headers]:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def native_program(name: str) -> Path:
    """The program `name` (a key of PROGRAMS): installed, else built from this clone."""
    installed = installed_program(name)
    if installed is not None:
        return installed
    program = PROGRAMS[name]
    compiler = find_cxx_compiler()
    if compiler is None:
        why = (f"{name} is not installed (LLMDD_BUILD_CPP_TESTS=OFF) and there is no C++ compiler "
               f"(c++, g++ or clang++) to build it")
        if "pytest" in sys.modules:       # a test skips; a benchmark run fails with the reason
            sys.modules["pytest"].skip(why)
        raise RuntimeError(why)
    root = _cache_root()
    out_dir = root / f"{name}-{_fingerprint(compiler, program)}"
    binary = out_dir / name
    if not binary.exists():
        for companion in program.companions:
            _compile(compiler, companion, PROGRAMS[companion], out_dir)
        _compile(compiler, name, program, out_dir)
        for old in root.glob(f"{name}-*"):      # builds for an earlier library or sources
            if old != out_dir:
                shutil.rmtree(old, ignore_errors=True)
    return binary
