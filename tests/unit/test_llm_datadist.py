# SPDX-License-Identifier: Apache-2.0
"""LLMDataDist lifecycle, the one-initialized-instance rule, init option checks, switch_role,
the CPU device, logging, and the calls that arrive with the transfer layer."""
import json
import logging
import os
import subprocess
import sys

import pytest

import llm_datadist as ld
from config_helpers import make_config
from llm_datadist import LLMException, LLMRole, LLMStatusCode


def test_constructor_types_and_ranges():
    with pytest.raises(TypeError):
        ld.LLMDataDist(1, 1)
    with pytest.raises(TypeError):
        ld.LLMDataDist(LLMRole.PROMPT, "1")
    with pytest.raises(ValueError):
        ld.LLMDataDist(LLMRole.PROMPT, -1)
    with pytest.raises(ValueError):
        ld.LLMDataDist(LLMRole.PROMPT, 2**64)
    assert ld.LLMDataDist(LLMRole.DECODER, 2**64 - 1).cluster_id == 2**64 - 1


def test_calls_before_init_raise_runtime_error():
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    with pytest.raises(RuntimeError, match="not initialized"):
        dd.cache_manager
    with pytest.raises(RuntimeError, match="not initialized"):
        dd.switch_role(LLMRole.DECODER)
    with pytest.raises(RuntimeError, match="not initialized"):
        dd.link_clusters([], 1000)
    dd.finalize()  # no-op


def test_init_is_idempotent_and_one_instance_per_process():
    first = ld.LLMDataDist(LLMRole.PROMPT, 1)
    options = make_config().generate_options()
    first.init(options)
    try:
        first.init(options)
        second = ld.LLMDataDist(LLMRole.DECODER, 2)
        with pytest.raises(LLMException, match="Cannot init multiple LLMDataDists") as info:
            second.init(options)
        assert info.value.status_code == LLMStatusCode.LLM_FAILED
    finally:
        first.finalize()
    second.init(options)  # allowed once the first is finalized
    second.finalize()


def test_finalize_invalidates_cache_manager():
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    dd.init(make_config().generate_options())
    cm = dd.cache_manager
    dd.finalize()
    with pytest.raises(RuntimeError, match="not initialized"):
        cm.allocate_cache(ld.CacheDesc(1, [1, 8], ld.DataType.DT_FLOAT, ld.Placement.HOST))


@pytest.mark.parametrize("key, value, match", [  # each message names the bad value
    ("llm.MemPoolConfig", '{"memory_size": 1048576, "page_shift": 9}', r"page_shift must be .* got 9"),
    ("llm.MemPoolConfig", '{"memory_size": 1048576, "page_shift": 31}', r"page_shift must be .* got 31"),
    ("llm.HostMemPoolConfig", '{"memory_size": 0}', r"memory_size must be a positive integer, got 0"),
    ("llm.HostMemPoolConfig", "not json", r"not a valid JSON object .*: not json"),
    ("llm.SyncKvCacheWaitTime", "0", r'SyncKvCacheWaitTime "0"'),
    ("ge.exec.deviceId", "-1", r'device id "-1"'),
    ("llm.listenIpInfo", "127.0.0.1", r'"127.0.0.1" is invalid'),
    ("llmdd.DeviceBackend", "tpu", r'DeviceBackend "tpu"'),
    ("ge.flowGraphMemMaxSize", "12,34", r"'12,34'"),
    ("llmdd.PollSpinUs", "-1", r'llmdd.PollSpinUs "-1" is not a number of microseconds in \[0, 1000\]'),
    ("llmdd.PollSpinUs", "1001", r'llmdd.PollSpinUs "1001" is not a number of microseconds in \[0, 1000\]'),
    ("llmdd.PollSpinUs", "50us", r'llmdd.PollSpinUs "50us"'),
])
def test_bad_init_options_are_param_invalid(key, value, match):
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    options = dict(make_config().generate_options())
    options[key] = value
    with pytest.raises(LLMException, match=match) as info:
        dd.init(options)
    assert info.value.status_code == LLMStatusCode.LLM_PARAM_INVALID
    dd.init(make_config().generate_options())  # nothing was left half-initialized
    dd.finalize()


@pytest.mark.parametrize("value", ["0", "1000"])
def test_poll_spin_takes_its_bounds(value):
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    dd.init(dict(make_config().generate_options(), **{"llmdd.PollSpinUs": value}))
    dd.finalize()


def test_init_options_must_be_str_dict():
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    with pytest.raises(TypeError):
        dd.init({"ge.exec.deviceId": 0})
    with pytest.raises(TypeError):
        dd.init([("ge.exec.deviceId", "0")])


def test_cuda_backend_requested_without_cuda():
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    if ld._core.cuda_info()["available"]:
        pytest.skip("a CUDA device is present")
    with pytest.raises(LLMException, match="CUDA is unavailable") as info:
        dd.init(make_config(device_backend="cuda").generate_options())
    assert info.value.status_code == LLMStatusCode.LLM_FEATURE_NOT_ENABLED


def test_cpu_device_is_the_default_without_cuda(monkeypatch):
    if ld._core.cuda_info()["available"]:
        pytest.skip("a CUDA device is present")
    monkeypatch.delenv("LLMDD_DEVICE_BACKEND", raising=False)
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    dd.init(make_config(device_backend=None).generate_options())
    try:
        assert dd.device_backend == "cpu"
        cache = dd.cache_manager.allocate_cache(ld.CacheDesc(2, [2, 8], ld.DataType.DT_INT32))  # DEVICE default
        cache.numpy(0)[...] = 7
        assert cache.numpy(0).sum() == 7 * 16
    finally:
        dd.finalize()


def test_switch_role_without_links(datadist):
    datadist.switch_role(LLMRole.DECODER)
    assert datadist.role == LLMRole.DECODER
    datadist.switch_role(LLMRole.DECODER)  # same role allowed
    datadist.switch_role(LLMRole.MIX, {"llm.listenIpInfo": "127.0.0.1:26000"})
    with pytest.raises(TypeError):
        datadist.switch_role(3)
    with pytest.raises(LLMException) as info:
        datadist.switch_role(LLMRole.PROMPT, {"llm.listenIpInfo": "127.0.0.1:port"})
    assert info.value.status_code == LLMStatusCode.LLM_PARAM_INVALID


def test_link_to_nobody_returns_link_failed(datadist):
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    info = ld.LLMClusterInfo()
    info.remote_cluster_id = 2
    info.append_remote_ip_info("127.0.0.1", port)
    overall, per_cluster = datadist.link_clusters([info], 1000)
    assert overall == LLMStatusCode.LLM_LINK_FAILED and per_cluster == [LLMStatusCode.LLM_LINK_FAILED]
    assert "refused" in datadist.last_link_errors[2][1]
    with pytest.raises(ValueError):
        datadist.link_clusters([info], 2**31)


def test_core_log_lines_reach_python_logging(caplog):
    # installed at import: no setup needed
    with caplog.at_level(logging.WARNING, logger="llm_datadist.core"):
        ld._core.log_for_test(2, "hello from the core")
    assert any(r.name == "llm_datadist.core" and r.getMessage() == "hello from the core" for r in caplog.records)


def test_core_warning_about_unknown_pool_key_is_logged(caplog):
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    options = dict(make_config().generate_options())
    options["llm.HostMemPoolConfig"] = '{"memory_size": 1048576, "page_szie": 12}'
    with caplog.at_level(logging.WARNING, logger="llm_datadist.core"):
        dd.init(options)
    dd.finalize()
    assert any('unknown key "page_szie"' in r.getMessage() for r in caplog.records)


def test_json_log_lines_by_environment():
    code = ("import logging, llm_datadist as ld\n"
            "logging.getLogger('llm_datadist').warning('x', extra={'operation': 'pull_blocks', 'request_id': 'r1'})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LLMDD_LOG_FORMAT": "json"})
    entry = json.loads(out.stderr.strip().splitlines()[-1])
    assert entry["message"] == "x" and entry["operation"] == "pull_blocks" and entry["request_id"] == "r1"


def test_import_touches_neither_torch_nor_cuda_nor_environment():
    code = ("import os, sys\n"
            "before = dict(os.environ)\n"
            "import llm_datadist\n"
            "assert dict(os.environ) == before, 'environment changed'\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.') or 'cuda' in m.lower()]\n"
            "assert not bad, bad\n"
            "maps = open('/proc/self/maps').read()\n"
            "assert 'libcuda' not in maps and 'libcudart' not in maps, 'a CUDA library was loaded'\n"
            "print('clean')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr


def test_public_names_match_upstream():
    expected = {"LLMClusterInfo", "LLMStatusCode", "LLMException", "LLMRole", "LlmConfig", "LLMConfig", "DataType",
                "Status", "CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "KvCache", "Cache", "BlocksCacheKey",
                "LLMDataDist", "Placement", "RegisterMemStatus", "LayerSynchronizer", "TransferConfig", "CacheTask",
                "TransferWithCacheKeyConfig", "Memtype", "MemInfo"}
    assert set(ld.__all__) == expected
    for name in expected:
        assert getattr(ld, name) is not None
    assert ld.LLMConfig is ld.LlmConfig
    with pytest.raises(AttributeError, match="legacy"):
        ld.KvCacheManager
    with pytest.raises(AttributeError):
        ld.no_such_name


def test_doctor_and_build_info():
    info = ld.build_info()
    assert info["version"] == ld.__version__ and os.path.isdir(info["include_dir"])
    assert os.path.exists(os.path.join(info["include_dir"], "llm_datadist", "llm_datadist.h"))
    assert os.path.exists(os.path.join(info["library_dir"], "libllm_datadist.so"))
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "doctor"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "CUDA:" in out.stdout and "Placement.DEVICE means" in out.stdout


def _free_port(family=None):
    import socket
    s = socket.socket(family or socket.AF_INET)
    s.bind(("::1" if family else "127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("host, ip", [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")])
def test_listen_ip_info_is_split_for_the_engine(host, ip):
    import socket
    port = str(_free_port(socket.AF_INET6 if host.startswith("[") else None))
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    cfg = make_config()
    cfg.listen_ip_info = f"{host}:{port}"
    dd.init(cfg.generate_options())
    try:
        assert dd._options["llm.ListenIp"] == ip and dd._options["llm.ListenPort"] == port
        assert dd.listen_address == f"{ip}:{port}"
        assert dd._options["llm.Role"] == "Prompt"
    finally:
        dd.finalize()


def test_python_element_sizes_agree_with_the_core():
    from llm_datadist.data_type import dtype_size
    for dt in ld.DataType:
        if dt == ld.DataType.DT_STRING:
            with pytest.raises(LLMException):
                ld._core.calc_tensor_size([1], dt.value)
            continue
        assert ld._core.calc_tensor_size([3, 5], dt.value) == 15 * dtype_size(dt), dt
