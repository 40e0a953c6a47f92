# SPDX-License-Identifier: Apache-2.0
"""The XID table (fault_injection/cuda_fault_table.def): its numbers against the CUDA 13 headers,
its content pinned, and what Python reads from the shim."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from fault_harness import REPO, compile_program
from llm_datadist import fault_injection as fi

TABLE = REPO / "fault_injection" / "cuda_fault_table.def"

# XID -> (code, init_code): reference/cuda_fault_injection.md section 4.1, CUDA 13 values.
EXPECTED = {
    13: (700, 0), 31: (700, 0), 43: (719, 0), 46: (702, 0), 48: (214, 0), 74: (220, 0),
    79: (999, 100), 94: (214, 0), 95: (214, 0), 109: (719, 0), 119: (999, 0), 120: (999, 0),
    140: (214, 0),
}


def _cuda_include_dir():
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    candidates += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*/include"), reverse=True)]
    for path in candidates:
        if (path / "cuda.h").is_file() and (path / "driver_types.h").is_file():
            return path
    return None


def test_table_matches_the_cuda_headers(tmp_path):
    include = _cuda_include_dir()
    if include is None:
        pytest.skip("no CUDA toolkit headers (cuda.h, driver_types.h) on this machine")
    src = tmp_path / "check_table.c"
    src.write_text(
        "#include <cuda.h>\n#include <driver_types.h>\n"
        "#define LLMDD_FAULT_XID(xid, mn, code, drv, rt, init, init_drv, action, desc) \\\n"
        "  _Static_assert(drv == code, #drv \" != \" #code); \\\n"
        "  _Static_assert(rt == code, #rt \" != \" #code); \\\n"
        "  _Static_assert(init_drv == init, #init_drv \" != \" #init);\n"
        "#define LLMDD_FAULT_ERROR(code, drv, rt, text) \\\n"
        "  _Static_assert(drv == code, #drv \" != \" #code); \\\n"
        "  _Static_assert(rt == code, #rt \" != \" #code);\n"
        f'#include "{TABLE}"\n'
        "int main(void) { return CUDA_VERSION >= 13000 ? 0 : 1; }\n")
    exe = compile_program([src], tmp_path / "check_table", [f"-I{include}"])
    import subprocess
    assert subprocess.run([str(exe)]).returncode == 0, f"{include} is older than CUDA 13"


def test_table_content_is_pinned():
    rows = fi.xid_table()
    assert {r.xid: (r.code, r.init_code) for r in rows} == EXPECTED
    by_xid = {r.xid: r for r in rows}
    # The two values Dynamo's shim gets wrong.
    assert by_xid[43].error == "CUDA_ERROR_LAUNCH_FAILED" and by_xid[43].code != 6
    assert by_xid[74].error == "CUDA_ERROR_NVLINK_UNCORRECTABLE"
    assert by_xid[48].runtime_error == "cudaErrorECCUncorrectable"
    assert by_xid[79].init_error == "CUDA_ERROR_NO_DEVICE" and by_xid[79].catalog_action == "RESTART_BM"
    for r in rows:
        assert r.mnemonic and r.description and r.catalog_action


def test_error_names_cover_every_xid_code():
    names = {e.code: e for e in fi.error_table()}
    for r in fi.xid_table():
        assert names[r.code].error == r.error
        assert names[r.code].runtime_error == r.runtime_error
    assert names[701].error == "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"


def test_xid_info_rejects_unknown_xids():
    assert fi.xid_info(48).code == 214
    with pytest.raises(ValueError, match=r"XID 77 is not in the fault table \(known: 13, 31"):
        fi.xid_info(77)
