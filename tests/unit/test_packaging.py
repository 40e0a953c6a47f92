# SPDX-License-Identifier: Apache-2.0
"""What `pip install .` puts on a machine: the files README's "What the wheel contains" lists (and
no C++ test program unless the build was asked for them), numpy as the only runtime dependency,
and one version everywhere."""
import fnmatch
import importlib.metadata
import re
from pathlib import Path

import llm_datadist as ld

REPO = Path(__file__).resolve().parents[2]
DIST = "llm-datadist"

# README's table, as patterns over the installed paths under site-packages/llm_datadist/.
WHEEL_FILES = [
    "*.py", "_bench/*.py", "_serve_demo/*.py", "integrations/*.py", "utils/*.py", "v2/*.py",
    "_core.cpython-*.so", "_core.pyi", "py.typed",
    "libllm_datadist.so", "include/llm_datadist/*.h", "include/llm_datadist/status_table.def",
    "_testing/libllmdd_cuda_fault.so",
]
# Installed only by a build with -C cmake.define.LLMDD_BUILD_CPP_TESTS=ON.
CPP_TEST_PROGRAMS = ["_testing/llmdd_cpp_tests", "_testing/llmdd_ge_client", "_testing/llmdd_bench_page_allocator",
                     "_testing/llmdd_ucx_peer", "_testing/llmdd_bench_ucx_get"]
REQUIRED = ["_core.pyi", "py.typed", "libllm_datadist.so", "include/llm_datadist/llm_datadist.h",
            "_testing/libllmdd_cuda_fault.so"]


def _installed_package_files():
    files = importlib.metadata.files(DIST)
    assert files, f"{DIST} has no RECORD: install it with pip"
    out = []
    for f in files:
        parts = Path(str(f)).parts
        if parts[0] != "llm_datadist" or "__pycache__" in parts:
            continue                    # dist-info, the console script, byte code
        out.append("/".join(parts[1:]))
    return sorted(out)


def test_installed_files_are_the_documented_ones():
    files = _installed_package_files()
    unexpected = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in WHEEL_FILES + CPP_TEST_PROGRAMS)]
    assert not unexpected, f"installed but not in README's list: {unexpected}"
    missing = [f for f in REQUIRED if f not in files]
    assert not missing, f"not installed: {missing}"
    assert any(fnmatch.fnmatch(f, "_core.cpython-*.so") for f in files), files
    readme = (REPO / "README.md").read_text()
    for name in ("_core.pyi", "py.typed", "libllm_datadist.so", "_testing/libllmdd_cuda_fault.so",
                 "LLMDD_BUILD_CPP_TESTS=ON"):
        assert name in readme, name


def test_cpp_test_programs_are_opt_in():
    """The default build leaves them out; CMakeLists.txt's option says OFF (the tests build them
    from the clone, tests/native_programs.py)."""
    cmake = (REPO / "CMakeLists.txt").read_text()
    option = re.search(r'option\(LLMDD_BUILD_CPP_TESTS "[^"]*" (ON|OFF)\)', cmake)
    assert option and option.group(1) == "OFF", option


def test_numpy_is_the_only_runtime_dependency():
    requires = importlib.metadata.requires(DIST) or []
    unconditional = [r for r in requires if "extra ==" not in r]
    assert [re.split(r"[ <>=!;\[]", r, maxsplit=1)[0] for r in unconditional] == ["numpy"], requires
    extras = set(importlib.metadata.metadata(DIST).get_all("Provides-Extra") or [])
    assert {"test", "bench", "torch", "cuda", "peers"} <= extras, extras


def test_one_version():
    pyproject = (REPO / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"$', pyproject, re.M).group(1)
    assert ld.__version__ == ld._core.__version__ == importlib.metadata.version(DIST) == declared
    assert ld.build_info()["version"] == declared
    # restated nowhere else: not in Python (the generated stub included), not in C++, not in CMake
    pattern = re.escape(declared)
    sources = [*REPO.glob("python/**/*.py"), *REPO.glob("python/**/*.pyi"), *REPO.glob("csrc/**/*.[ch]*"),
               REPO / "CMakeLists.txt"]
    for path in sources:
        assert not re.search(rf'["\']{pattern}["\']', path.read_text()), f"{path} restates the version"
