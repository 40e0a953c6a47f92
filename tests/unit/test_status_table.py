# SPDX-License-Identifier: Apache-2.0
"""The error table is append-only: these (name, number) pairs must never change."""
import json
import pickle
import subprocess
import sys

import pytest

from llm_datadist import LLMException, LLMStatusCode, Status
from llm_datadist.status import all_status_info, code_2_status, handle_llm_status, status_info

# Upstream Python member -> value. Pinned by hand on purpose: a change to the table that alters
# any of these fails here.
PINNED_PYTHON = {
    "LLM_SUCCESS": 0,
    "LLM_FAILED": 0xFFFFFFFF,
    "LLM_WAIT_PROCESS_TIMEOUT": 0x5010B001,
    "LLM_KV_CACHE_NOT_EXIST": 0x5010B002,
    "LLM_REPEAT_REQUEST": 0x5010B003,
    "LLM_REQUEST_ALREADY_COMPLETED": 0x5010B004,
    "LLM_PARAM_INVALID": 0x5010B005,
    "LLM_ENGINE_FINALIZED": 0x5010B006,
    "LLM_NOT_YET_LINK": 0x5010B007,
    "LLM_ALREADY_LINK": 0x5010B008,
    "LLM_LINK_FAILED": 0x5010B009,
    "LLM_UNLINK_FAILED": 0x5010B00A,
    "LLM_NOTIFY_PROMPT_UNLINK_FAILED": 0x5010B00B,
    "LLM_CLUSTER_NUM_EXCEED_LIMIT": 0x5010B00C,
    "LLM_PROCESSING_LINK": 0x5010B00D,
    "LLM_DEVICE_OUT_OF_MEMORY": 0x5010B00E,
    "LLM_PREFIX_ALREADY_EXIST": 0x5010B00F,
    "LLM_PREFIX_NOT_EXIST": 0x5010B010,
    "LLM_SEQ_LENOVERLIMIT": 0x5010B011,
    "LLM_NO_FREE_BLOCK": 0x5010B012,
    "LLM_BLOCKS_OUT_OF_MEMORY": 0x5010B013,
    "LLM_EXIST_LINK": 0x5010B018,
    "LLM_FEATURE_NOT_ENABLED": 0x5010B019,
    "LLM_TIMEOUT": 0x5010B01A,
    "LLM_LINK_BUSY": 0x5010B01B,
    "LLM_OUT_OF_MEMORY": 0x5010B01C,
    "LLM_DEVICE_MEM_ERROR": 507053,
    "LLM_SUSPECT_REMOTE_ERROR": 507057,
    "LLM_UNKNOWN_ERROR": -1,
}
# C++ constant -> value, including the codes upstream Python has no member for.
PINNED_CPP = {
    "LLM_SUCCESS": 0, "LLM_FAILED": 0xFFFFFFFF, "LLM_WAIT_PROC_TIMEOUT": 0x5010B001,
    "LLM_KV_CACHE_NOT_EXIST": 0x5010B002, "LLM_REPEAT_REQUEST": 0x5010B003,
    "LLM_REQUEST_ALREADY_COMPLETED": 0x5010B004, "LLM_PARAM_INVALID": 0x5010B005,
    "LLM_ENGINE_FINALIZED": 0x5010B006, "LLM_NOT_YET_LINK": 0x5010B007, "LLM_ALREADY_LINK": 0x5010B008,
    "LLM_LINK_FAILED": 0x5010B009, "LLM_UNLINK_FAILED": 0x5010B00A, "LLM_NOTIFY_PROMPT_UNLINK_FAILED": 0x5010B00B,
    "LLM_CLUSTER_NUM_EXCEED_LIMIT": 0x5010B00C, "LLM_PROCESSING_LINK": 0x5010B00D,
    "LLM_DEVICE_OUT_OF_MEMORY": 0x5010B00E, "LLM_PREFIX_ALREADY_EXIST": 0x5010B00F,
    "LLM_PREFIX_NOT_EXIST": 0x5010B010, "LLM_SEQ_LEN_OVER_LIMIT": 0x5010B011, "LLM_NO_FREE_BLOCK": 0x5010B012,
    "LLM_BLOCKS_OUT_OF_MEMORY": 0x5010B013, "LLM_CACHE_INCOMPATIBLE": 0x5010B014,
    "LLM_CACHE_KEY_ALREADY_EXIST": 0x5010B015, "LLM_COPY_CACHE_FAILED": 0x5010B016,
    "LLM_CACHE_ID_ALREADY_EXIST": 0x5010B017, "LLM_EXIST_LINK": 0x5010B018, "LLM_FEATURE_NOT_ENABLED": 0x5010B019,
    "LLM_TIMEOUT": 0x5010B01A, "LLM_LINK_BUSY": 0x5010B01B, "LLM_OUT_OF_MEMORY": 0x5010B01C,
    "LLM_DEVICE_MEM_ERROR": 507053, "LLM_SUSPECT_REMOTE_ERROR": 507057, "LLM_UNKNOWN_ERROR": -1,
}
ACTIONS = {"none", "retry_now", "retry_later", "relink", "fix_call", "free_memory", "fatal"}


def test_python_members_are_pinned():
    assert {m.name: m.value for m in LLMStatusCode} == PINNED_PYTHON


def test_table_rows_are_pinned_and_prefix_is_unchanged():
    rows = all_status_info()
    assert {r["cpp_name"]: r["value"] for r in rows} == PINNED_CPP
    # Append-only: the existing rows keep their order; new rows go at the end.
    assert [r["cpp_name"] for r in rows[: len(PINNED_CPP)]] == list(PINNED_CPP)


def test_every_gecode_in_range_is_defined():
    values = {r["value"] for r in all_status_info()}
    assert all(0x5010B000 + n in values for n in range(1, 0x1D))


@pytest.mark.parametrize("row", all_status_info(), ids=lambda r: r["cpp_name"])
def test_every_row_has_complete_metadata(row):
    assert row["message"] and row["suggestion"]
    assert row["action"] in ACTIONS
    assert isinstance(row["recoverable"], bool)
    assert 200 <= row["http_status"] < 600 and row["grpc_code"].isupper()
    if row["value"] != 0:
        assert row["action"] != "none"


def test_design_http_and_grpc_mapping():
    expect = {
        "LLM_PARAM_INVALID": (400, "INVALID_ARGUMENT"), "LLM_KV_CACHE_NOT_EXIST": (404, "NOT_FOUND"),
        "LLM_ALREADY_LINK": (409, "ALREADY_EXISTS"), "LLM_NOT_YET_LINK": (412, "FAILED_PRECONDITION"),
        "LLM_PROCESSING_LINK": (503, "UNAVAILABLE"), "LLM_LINK_BUSY": (503, "UNAVAILABLE"),
        "LLM_TIMEOUT": (504, "DEADLINE_EXCEEDED"), "LLM_OUT_OF_MEMORY": (503, "RESOURCE_EXHAUSTED"),
        "LLM_FEATURE_NOT_ENABLED": (501, "UNIMPLEMENTED"), "LLM_FAILED": (500, "INTERNAL"),
    }
    for name, (http, grpc) in expect.items():
        info = status_info(name)
        assert (info["http_status"], info["grpc_code"]) == (http, grpc), name


@pytest.mark.parametrize("member", list(LLMStatusCode), ids=lambda m: m.name)
def test_exception_carries_table_metadata_for_every_code(member):
    exc = LLMException("boom", status_code=member)
    info = status_info(int(member))
    assert isinstance(exc, RuntimeError)
    assert exc.status_code is member and exc.status_code == member
    assert exc.recoverable == info["recoverable"]
    assert exc.action == info["action"]
    assert exc.suggestion == info["suggestion"]
    d = exc.to_dict()
    assert d["ok"] is False and d["code"] == member.name and d["status_code"] == int(member)
    assert d["message"] == "boom" and d["details"]["suggestions"] == [info["suggestion"]]
    json.dumps(d)
    clone = pickle.loads(pickle.dumps(exc))
    assert clone.status_code == member and str(clone) == "boom"


def test_upstream_constructor_and_default():
    exc = LLMException("x")
    assert exc.status_code == LLMStatusCode.LLM_SUCCESS
    assert LLMException("a", "b", status_code=LLMStatusCode.LLM_TIMEOUT).args == ("a", "b")


def test_unknown_codes_map_to_failed_like_upstream():
    assert code_2_status(0x5010B014) is LLMStatusCode.LLM_FAILED  # C++-only code
    assert code_2_status(12345) is LLMStatusCode.LLM_FAILED
    assert LLMException("x", status_code=0x5010B0FF).status_code is LLMStatusCode.LLM_FAILED


def test_native_only_code_keeps_its_identity():
    from llm_datadist.status import _exception_from_native
    exc = _exception_from_native(0x5010B014, "layouts differ", [("operation", "copy_cache")])
    assert exc.status_code is LLMStatusCode.LLM_FAILED
    assert exc.context["native_name"] == "LLM_CACHE_INCOMPATIBLE"
    assert exc.action == "fix_call" and exc.recoverable is True
    assert str(exc).startswith("copy_cache failed, error code is LLMStatusCode.LLM_FAILED")


def test_str_of_member_is_upstream_style():
    assert str(LLMStatusCode.LLM_TIMEOUT) == "LLMStatusCode.LLM_TIMEOUT"
    assert f"{LLMStatusCode.LLM_TIMEOUT}" == "LLMStatusCode.LLM_TIMEOUT"
    assert f"{LLMStatusCode.LLM_TIMEOUT:x}" == "5010b01a"


def test_status_and_handle_llm_status():
    assert Status(0).is_ok() and not Status(0x5010B005).is_ok()
    assert Status(0x5010B005).status_code is LLMStatusCode.LLM_PARAM_INVALID
    handle_llm_status(0, "f")
    with pytest.raises(LLMException) as info:
        handle_llm_status(0x5010B002, "pull_cache", "key 7")
    assert info.value.status_code == LLMStatusCode.LLM_KV_CACHE_NOT_EXIST
    assert "pull_cache failed" in str(info.value) and "key 7" in str(info.value)


@pytest.mark.parametrize("spelling", ["0x5010B002", "1343270914", "LLM_KV_CACHE_NOT_EXIST",
                                      "LLMStatusCode.LLM_KV_CACHE_NOT_EXIST"])
def test_explain_cli(spelling):
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "explain", spelling],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LLM_KV_CACHE_NOT_EXIST" in out.stdout and "Recoverable:  yes" in out.stdout
    assert "fix_call" in out.stdout


def test_explain_cli_json_and_unknown():
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "explain", "--json", "LLM_SEQ_LEN_OVER_LIMIT"],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["python_name"] == "LLM_SEQ_LENOVERLIMIT"
    bad = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "explain", "0x5010B0FF"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown status code" in bad.stderr
