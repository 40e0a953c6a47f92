# SPDX-License-Identifier: Apache-2.0
"""The run-time UCX loader and the UCP wrapper (csrc/transport/ucx/).

The loader runs once per process, so each case runs in a fresh subprocess with its own
environment. Which UCX is found depends on the host: a system libucp (Debian's libucx0) and/or the
PyPI wheel libucx-cu12/-cu13 (its libucp is passed through LLMDD_UCX_LIBRARY). Without either the
"available" cases skip, saying why, unless LLMDD_TEST_REQUIRE_UCX=1 (CI sets it: there UCX is
installed and must work).
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from native_programs import native_program  # noqa: E402
_UCX_VARS = ("LLMDD_UCX_LIBRARY", "LLMDD_TEST_EXPECT_UCX")
_INFO = textwrap.dedent("""
    import json
    from llm_datadist import _core
    print(json.dumps(_core.ucx_info()))
""")


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in _UCX_VARS}
    # UCX over tcp on the loopback device only (no traffic leaves the host).
    env.setdefault("UCX_TLS", "tcp")
    env.setdefault("UCX_NET_DEVICES", "lo")
    env.update(overrides)
    return env


def _ucx_info(**overrides):
    out = subprocess.run([sys.executable, "-c", _INFO], capture_output=True, text=True, timeout=60,
                         env=_env(**overrides))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wheel_libucp():
    """libucp of an installed libucx-cu12/-cu13 wheel, or None."""
    for entry in sys.path:
        hits = sorted(glob.glob(os.path.join(entry, "libucx", "lib", "libucp.so.0")))
        if hits:
            return hits[0]
    return None


def _libraries():
    """(id, LLMDD_UCX_LIBRARY or "" for the default soname) for every UCX this host has."""
    found = []
    if _ucx_info()["available"]:
        found.append(("system", ""))
    wheel = _wheel_libucp()
    if wheel:
        found.append(("wheel", wheel))
    return found


_FOUND = _libraries()


def _require_or_skip():
    if not _FOUND:
        if os.environ.get("LLMDD_TEST_REQUIRE_UCX") == "1":
            pytest.fail("LLMDD_TEST_REQUIRE_UCX=1 but no UCX found: " + _ucx_info()["reason"])
        pytest.skip("no UCX here (" + _ucx_info()["reason"] + "); install libucx0 or libucx-cu12")


def test_unavailable_ucx_is_reported_not_raised():
    info = _ucx_info(LLMDD_UCX_LIBRARY="/nonexistent/libucp.so.0")
    assert info["available"] is False
    assert "LLMDD_UCX_LIBRARY=/nonexistent/libucp.so.0" in info["reason"]
    assert info["transports"] == [] and info["version"] == ""


def test_a_library_that_is_not_ucx_is_reported():
    # A real shared library lacking UCP's symbols: the loader names what is missing.
    import llm_datadist
    info = _ucx_info(LLMDD_UCX_LIBRARY=str(Path(llm_datadist.__file__).parent / "libllm_datadist.so"))
    assert info["available"] is False
    assert "lacks required symbols" in info["reason"] and "ucp_get_nbx" in info["reason"]


@pytest.mark.parametrize("which", ["system", "wheel"])
def test_ucx_info_describes_the_library(which):
    _require_or_skip()
    library = dict(_FOUND).get(which)
    if library is None:
        pytest.skip(f"no {which} UCX here")
    info = _ucx_info(**({"LLMDD_UCX_LIBRARY": library} if library else {}))
    assert info["available"] is True, info["reason"]
    assert info["reason"] == "" and info["version"].startswith("1.")
    assert os.path.exists(info["library"])
    assert info["transports"] == ["tcp/lo"], info["transports"]  # UCX_TLS=tcp, UCX_NET_DEVICES=lo


@pytest.mark.parametrize("which", ["system", "wheel"])
def test_cpp_ucx_tests_pass(which):
    """Gets and puts in process and with a peer process, every byte compared; a frozen peer ends a
    get in LLM_TIMEOUT, a killed one in LLM_LINK_FAILED (tests/cpp/ucx_test.cc)."""
    _require_or_skip()
    library = dict(_FOUND).get(which)
    if library is None:
        pytest.skip(f"no {which} UCX here")
    env = _env(LLMDD_TEST_EXPECT_UCX="1", **({"LLMDD_UCX_LIBRARY": library} if library else {}))
    out = subprocess.run([str(native_program("llmdd_cpp_tests")), "Ucx"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.endswith(" 0 failed") and int(summary.split()[0]) >= 10, out.stdout[-2000:]


def test_cpp_ucx_tests_without_ucx():
    env = _env(LLMDD_TEST_EXPECT_UCX="0", LLMDD_UCX_LIBRARY="/nonexistent/libucp.so.0")
    out = subprocess.run([str(native_program("llmdd_cpp_tests")), "Ucx"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.endswith(" 0 failed") and int(summary.split()[0]) >= 10, out.stdout[-2000:]


def test_doctor_names_ucx():
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "doctor"], capture_output=True,
                         text=True, timeout=60, env=_env())
    assert out.returncode == 0 and "UCX:" in out.stdout, out.stdout + out.stderr
    info = _ucx_info()
    if info["available"]:
        assert info["version"] in out.stdout and "tcp/lo" in out.stdout
    else:
        assert "UCX:            not available" in out.stdout
    as_json = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "doctor", "--json"],
                             capture_output=True, text=True, timeout=60, env=_env())
    assert json.loads(as_json.stdout)["ucx"]["available"] == info["available"]


_INIT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import llm_datadist as ld
    from config_helpers import make_config
    options = dict(make_config().generate_options())
    options["llmdd.Transport"] = sys.argv[2]
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    try:
        dd.init(options)
        print(json.dumps({"ok": True}))
        dd.finalize()
    except ld.LLMException as e:
        print(json.dumps({"ok": False, "code": e.status_code.name, "message": str(e)}))
""")


def _init_with_transport(value, **env):
    tests_dir = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _INIT, tests_dir, value], capture_output=True, text=True,
                         timeout=60, env=_env(**env))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_forced_ucx_without_ucx_fails_init_naming_why():
    got = _init_with_transport("ucx", LLMDD_UCX_LIBRARY="/nonexistent/libucp.so.0")
    assert got["ok"] is False and got["code"] == "LLM_FEATURE_NOT_ENABLED", got
    assert "llmdd.Transport=ucx" in got["message"] and "/nonexistent/libucp.so.0" in got["message"], got


def test_transport_option_values():
    got = _init_with_transport("rdma")
    assert got["ok"] is False and got["code"] == "LLM_PARAM_INVALID", got
    assert '"auto", "tcp" or "ucx"' in got["message"], got
    assert _init_with_transport("tcp")["ok"] is True
    if _FOUND and dict(_FOUND).get("system") is not None:
        assert _init_with_transport("ucx")["ok"] is True
