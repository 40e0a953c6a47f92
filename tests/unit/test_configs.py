# SPDX-License-Identifier: Apache-2.0
"""LlmConfig / LLMConfig, LLMRole and LLMClusterInfo against upstream's contract: every field's
default, accepted values, emitted key and string, and the exact error kind for bad input."""
from __future__ import annotations

import contextlib
import json
import socket
from typing import Any, Iterator

import pytest

from llm_datadist.configs import (LLMClusterInfo, LLMConfig, LlmConfig, LLMRole,
                                  _parse_listen_ip_info)
from llm_datadist.status import LLMException, LLMStatusCode

MU = ("llm.MemoryUtilization", "0.95")
POOL = '{"memory_size": 67108864}'


@contextlib.contextmanager
def param_invalid(*needles: Any) -> Iterator[Any]:
    """Expect LLMException(LLM_PARAM_INVALID) whose message names every needle."""
    with pytest.raises(LLMException) as info:
        yield info
    assert info.value.status_code == LLMStatusCode.LLM_PARAM_INVALID
    assert isinstance(info.value, RuntimeError)
    for needle in needles:
        assert str(needle) in str(info.value), (needle, str(info.value))


def options_of(**fields: Any) -> list:
    cfg = LlmConfig()
    for name, value in fields.items():
        setattr(cfg, name, value)
    return list(cfg.generate_options().items())


# ---- LLMRole ----------------------------------------------------------------------------------

def test_llm_role_members_and_str():
    assert [(m.name, m.value) for m in LLMRole] == [("PROMPT", 1), ("DECODER", 2), ("MIX", 3)]
    assert str(LLMRole.PROMPT) == "LLMRole.PROMPT"
    assert f"{LLMRole.DECODER}" == "LLMRole.DECODER"
    assert LLMRole.MIX == 3 and isinstance(LLMRole.MIX, int)
    assert [r._to_option_str() for r in LLMRole] == ["Prompt", "Decoder", "Mix"]


# ---- defaults ---------------------------------------------------------------------------------

def test_alias_and_defaults():
    assert LLMConfig is LlmConfig
    cfg = LlmConfig()
    expected = {
        "ge_options": {}, "device_id": None, "sync_kv_timeout": None, "deploy_res_path": "",
        "buf_pool_cfg": "", "mem_pool_cfg": "", "host_mem_pool_cfg": "",
        "enable_cache_manager": False, "enable_remote_cache_accessible": False,
        "listen_ip_info": "", "link_total_time": 0, "link_retry_count": 1,
        "rdma_traffic_class": None, "rdma_service_level": None, "local_comm_res": "",
        "transfer_backend": "", "global_resource_config": "", "cluster_info": "",
        "output_max_size": None, "enable_switch_role": False, "mem_utilization": 0.95,
        "device_backend": "auto",
    }
    for name, value in expected.items():
        got = getattr(cfg, name)
        assert got == value and type(got) is type(value), name
    assert cfg.options == {}


def test_default_options_are_upstreams():
    cfg = LlmConfig()
    opts = cfg.generate_options()
    assert list(opts.items()) == [MU]
    assert cfg.options is opts


def test_generate_options_returns_the_same_accumulating_dict():
    cfg = LlmConfig()
    first = cfg.generate_options()
    assert cfg.gen_options() is first
    assert cfg.generate_options() is first
    cfg.enable_cache_manager = True
    second = cfg.gen_options()
    assert second is first
    assert first["llm.EnableCacheManager"] == "1"
    # A key once emitted stays (upstream accumulates into one dict).
    cfg.enable_cache_manager = None
    assert cfg.generate_options()["llm.EnableCacheManager"] == "1"
    assert LlmConfig().generate_options() is not first


# ---- every field: accepted value -> key and string ---------------------------------------------

SINGLE_KEY_CASES = [
    ("sync_kv_timeout", 20000, "llm.SyncKvCacheWaitTime", "20000"),
    ("sync_kv_timeout", "1000", "llm.SyncKvCacheWaitTime", "1000"),
    ("sync_kv_timeout", 2**31 - 1, "llm.SyncKvCacheWaitTime", str(2**31 - 1)),
    ("deploy_res_path", "/tmp/res", "llm.deployResPath", "/tmp/res"),
    ("buf_pool_cfg", '{"buf_cfg": []}', "llm.BufPoolCfg", '{"buf_cfg": []}'),
    ("mem_pool_cfg", POOL, "llm.MemPoolConfig", POOL),
    ("mem_pool_cfg", '{"memory_size": 1024, "page_shift": 10}', "llm.MemPoolConfig",
     '{"memory_size": 1024, "page_shift": 10}'),
    ("host_mem_pool_cfg", '{"memory_size": 1073741824, "page_shift": 30}',
     "llm.HostMemPoolConfig", '{"memory_size": 1073741824, "page_shift": 30}'),
    ("enable_cache_manager", True, "llm.EnableCacheManager", "1"),
    ("enable_cache_manager", False, "llm.EnableCacheManager", "0"),
    ("enable_remote_cache_accessible", True, "llm.EnableRemoteCacheAccessible", "1"),
    ("enable_remote_cache_accessible", False, "llm.EnableRemoteCacheAccessible", "0"),
    ("listen_ip_info", "192.168.1.1:26000", "llm.listenIpInfo", "192.168.1.1:26000"),
    ("link_total_time", 0, "llm.LinkTotalTime", "0"),
    ("link_total_time", 2**32 - 1, "llm.LinkTotalTime", str(2**32 - 1)),
    ("link_retry_count", 1, "llm.LinkRetryCount", "1"),
    ("link_retry_count", 100, "llm.LinkRetryCount", "100"),
    ("rdma_traffic_class", 132, "llm.RdmaTrafficClass", "132"),
    ("rdma_traffic_class", 0, "llm.RdmaTrafficClass", "0"),
    ("rdma_service_level", 4, "llm.RdmaServiceLevel", "4"),
    ("rdma_service_level", 2**32 - 1, "llm.RdmaServiceLevel", str(2**32 - 1)),
    ("local_comm_res", "", "llm.LocalCommRes", ""),
    ("local_comm_res", '{"version": "1.3"}', "llm.LocalCommRes", '{"version": "1.3"}'),
    ("transfer_backend", "hixl", "llm.TransferBackend", "hixl"),
    ("global_resource_config", "", "llm.GlobalResourceConfig", ""),
    ("global_resource_config", '{"a": 1}', "llm.GlobalResourceConfig", '{"a": 1}'),
    ("output_max_size", 4096, "llm.OutputMaxSize", "4096"),
    ("output_max_size", -1, "llm.OutputMaxSize", "-1"),
    ("enable_switch_role", True, "llm.EnableSwitchRole", "1"),
]


@pytest.mark.parametrize("name,value,key,text", SINGLE_KEY_CASES)
def test_field_emits_its_key(name, value, key, text):
    cfg = LlmConfig()
    setattr(cfg, name, value)
    assert getattr(cfg, name) == value
    assert list(cfg.generate_options().items()) == [(key, text), MU]


@pytest.mark.parametrize("name,value", [
    ("deploy_res_path", ""), ("buf_pool_cfg", ""), ("mem_pool_cfg", ""),
    ("host_mem_pool_cfg", ""), ("listen_ip_info", ""), ("enable_switch_role", False),
    ("ge_options", {}),
])
def test_empty_or_false_values_emit_nothing(name, value):
    assert options_of(**{name: value}) == [MU]


@pytest.mark.parametrize("name", [
    "ge_options", "deploy_res_path", "buf_pool_cfg", "mem_pool_cfg", "host_mem_pool_cfg",
    "enable_cache_manager", "enable_remote_cache_accessible", "listen_ip_info",
    "local_comm_res", "transfer_backend", "global_resource_config", "enable_switch_role",
    "device_backend",
])
def test_none_resets_optional_fields(name):
    fresh = LlmConfig()
    cfg = LlmConfig()
    setattr(cfg, name, None)
    assert getattr(cfg, name) == getattr(fresh, name)
    assert list(cfg.generate_options().items()) == [MU]


def test_ge_options_merged_first_then_overridden_by_fields():
    cfg = LlmConfig()
    cfg.ge_options = {"ge.flowGraphMemMaxSize": "4106127360", "ge.exec.deviceId": "7"}
    cfg.device_id = 1
    assert list(cfg.generate_options().items()) == [
        ("ge.flowGraphMemMaxSize", "4106127360"), ("ge.exec.deviceId", "1"),
        ("ge.session_device_id", "1"), MU]
    assert cfg.ge_options == {"ge.flowGraphMemMaxSize": "4106127360", "ge.exec.deviceId": "7"}


def test_device_id_int_list_and_tuple():
    assert options_of(device_id=0) == [("ge.exec.deviceId", "0"), ("ge.session_device_id", "0"), MU]
    assert options_of(device_id=2**31 - 1)[0] == ("ge.exec.deviceId", str(2**31 - 1))
    # Upstream inserts the session id first for a list.
    assert options_of(device_id=[3, 1, 2]) == [
        ("ge.session_device_id", "3"), ("ge.exec.deviceId", "3;1;2"), MU]
    assert options_of(device_id=(5,)) == [
        ("ge.session_device_id", "5"), ("ge.exec.deviceId", "5"), MU]
    cfg = LlmConfig()
    cfg.device_id = (1, 2)
    assert cfg.device_id == (1, 2)


def test_mem_utilization_always_emitted_as_str():
    assert options_of(mem_utilization=0.5) == [("llm.MemoryUtilization", "0.5")]
    assert options_of(mem_utilization=0.0) == [("llm.MemoryUtilization", "0.0")]
    assert options_of(mem_utilization=1.0) == [("llm.MemoryUtilization", "1.0")]
    cfg = LlmConfig()
    cfg.enable_cache_manager = True
    assert "llm.MemoryUtilization" in cfg.generate_options()


def test_sync_kv_timeout_str_is_kept_as_given():
    cfg = LlmConfig()
    cfg.sync_kv_timeout = "0100"
    assert cfg.sync_kv_timeout == "0100"
    assert cfg.generate_options()["llm.SyncKvCacheWaitTime"] == "0100"


def test_getters_after_set():
    cfg = LlmConfig()
    cfg.link_total_time = 20
    cfg.link_retry_count = 80
    cfg.local_comm_res = '{"version": "1.3"}'
    cfg.transfer_backend = "hixl"
    cfg.global_resource_config = "{}"
    assert (cfg.link_total_time, cfg.link_retry_count) == (20, 80)
    assert cfg.local_comm_res == '{"version": "1.3"}'
    assert (cfg.transfer_backend, cfg.global_resource_config) == ("hixl", "{}")


# ---- device_backend (ours) --------------------------------------------------------------------

@pytest.mark.parametrize("value", ["auto", "cuda", "cpu"])
def test_device_backend_emitted_only_when_set(value):
    cfg = LlmConfig()
    cfg.device_backend = value
    assert cfg.device_backend == value
    assert list(cfg.generate_options().items()) == [MU, ("llmdd.DeviceBackend", value)]


def test_device_backend_errors():
    cfg = LlmConfig()
    with param_invalid("'gpu'"):
        cfg.device_backend = "gpu"
    with param_invalid("'CUDA'"):
        cfg.device_backend = "CUDA"
    with pytest.raises(TypeError, match="device_backend"):
        cfg.device_backend = 1
    assert "llmdd.DeviceBackend" not in cfg.generate_options()


# ---- the full dict ----------------------------------------------------------------------------

def test_full_config_exact_keys_and_order():
    cfg = LlmConfig()
    cfg.device_backend = "cpu"
    cfg.mem_utilization = 0.8
    cfg.enable_switch_role = True
    cfg.output_max_size = 1024
    cfg.cluster_info = '{"cluster_id": 1, "listen_ip_info": [{"ip": "1.2.3.4", "port": 26000}]}'
    cfg.global_resource_config = '{"g": 1}'
    cfg.transfer_backend = "hixl"
    cfg.local_comm_res = '{"version": "1.3"}'
    cfg.rdma_service_level = 4
    cfg.rdma_traffic_class = 132
    cfg.link_retry_count = 3
    cfg.link_total_time = 20
    cfg.listen_ip_info = "10.0.0.1:26000"
    cfg.enable_remote_cache_accessible = True
    cfg.enable_cache_manager = True
    cfg.host_mem_pool_cfg = '{"memory_size": 1048576}'
    cfg.mem_pool_cfg = POOL
    cfg.buf_pool_cfg = '{"buf_pool_size": 1}'
    cfg.deploy_res_path = "/res"
    cfg.sync_kv_timeout = 5000
    cfg.device_id = 0
    cfg.ge_options = {"ge.flowGraphMemMaxSize": "4106127360", "ge.x": "y"}
    opts = cfg.generate_options()
    assert list(opts.items()) == [
        ("ge.flowGraphMemMaxSize", "4106127360"),
        ("ge.x", "y"),
        ("ge.exec.deviceId", "0"),
        ("ge.session_device_id", "0"),
        ("llm.SyncKvCacheWaitTime", "5000"),
        ("llm.deployResPath", "/res"),
        ("llm.BufPoolCfg", '{"buf_pool_size": 1}'),
        ("llm.MemPoolConfig", POOL),
        ("llm.HostMemPoolConfig", '{"memory_size": 1048576}'),
        ("llm.EnableCacheManager", "1"),
        ("llm.EnableRemoteCacheAccessible", "1"),
        ("llm.listenIpInfo", "10.0.0.1:26000"),
        ("llm.LinkTotalTime", "20"),
        ("llm.LinkRetryCount", "3"),
        ("llm.RdmaTrafficClass", "132"),
        ("llm.RdmaServiceLevel", "4"),
        ("llm.LocalCommRes", '{"version": "1.3"}'),
        ("llm.TransferBackend", "hixl"),
        ("llm.GlobalResourceConfig", '{"g": 1}'),
        ("llm.ClusterInfo",
         '{"cluster_id": 1, "listen_ip_info": [{"ip": 67305985, "port": 26000}]}'),
        ("llm.OutputMaxSize", "1024"),
        ("llm.EnableSwitchRole", "1"),
        ("llm.MemoryUtilization", "0.8"),
        ("llmdd.DeviceBackend", "cpu"),
    ]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items())
    assert cfg.generate_options() is opts


# ---- wrong types -> TypeError -----------------------------------------------------------------

TYPE_ERRORS = [
    ("ge_options", "x"), ("ge_options", {"k": 1}), ("ge_options", {1: "v"}),
    ("device_id", "0"), ("device_id", 1.0), ("device_id", None),
    ("device_id", [0, "1"]), ("device_id", {0}),
    ("sync_kv_timeout", 1.5), ("sync_kv_timeout", None),
    ("deploy_res_path", 1), ("buf_pool_cfg", b"{}"), ("mem_pool_cfg", 1),
    ("mem_pool_cfg", {"memory_size": 1}), ("host_mem_pool_cfg", 1),
    ("enable_cache_manager", 1), ("enable_cache_manager", "True"),
    ("enable_remote_cache_accessible", 0), ("listen_ip_info", 26000),
    ("link_total_time", 1.0), ("link_total_time", None),
    ("link_retry_count", "3"),
    ("rdma_traffic_class", 1.0), ("rdma_traffic_class", None),
    ("rdma_service_level", "4"), ("local_comm_res", 1), ("transfer_backend", 1),
    ("global_resource_config", {}), ("cluster_info", None), ("cluster_info", {}),
    ("output_max_size", "1"), ("enable_switch_role", 1),
    ("mem_utilization", 1), ("mem_utilization", "0.5"), ("mem_utilization", None),
    ("device_backend", 0),
]


@pytest.mark.parametrize("name,value", TYPE_ERRORS)
def test_wrong_type_is_type_error(name, value):
    cfg = LlmConfig()
    before = getattr(cfg, name)
    with pytest.raises(TypeError) as info:
        setattr(cfg, name, value)
    assert name in str(info.value)
    assert "only support" in str(info.value)
    assert getattr(cfg, name) == before


# ---- out-of-range C integers -> ValueError ----------------------------------------------------

VALUE_ERRORS = [
    ("device_id", 2**31), ("device_id", [0, 2**31]),
    ("sync_kv_timeout", 2**31), ("sync_kv_timeout", str(2**31)),
    ("rdma_traffic_class", -1), ("rdma_traffic_class", 2**32),
    ("rdma_service_level", -1), ("rdma_service_level", 2**32),
    ("output_max_size", 2**63), ("output_max_size", -(2**63) - 1),
]


@pytest.mark.parametrize("name,value", VALUE_ERRORS)
def test_out_of_range_is_value_error(name, value):
    cfg = LlmConfig()
    with pytest.raises(ValueError) as info:
        setattr(cfg, name, value)
    bad = value[-1] if isinstance(value, list) else int(value)
    assert str(bad) in str(info.value)
    assert name in str(info.value)


# ---- semantic errors -> LLMException(LLM_PARAM_INVALID) ---------------------------------------

SEMANTIC_ERRORS = [
    ("device_id", -1, "-1"), ("device_id", [0, -2], "-2"), ("device_id", [], "[]"),
    ("device_id", -(2**40), str(-(2**40))),
    ("sync_kv_timeout", 0, "0"), ("sync_kv_timeout", -5, "-5"),
    ("sync_kv_timeout", "0", "'0'"), ("sync_kv_timeout", "10ms", "'10ms'"),
    ("sync_kv_timeout", "-1", "'-1'"), ("sync_kv_timeout", "", "''"),
    ("sync_kv_timeout", "\u0661\u0662", "\u0661\u0662"),
    ("link_total_time", -1, "-1"), ("link_total_time", 2**32, str(2**32)),
    ("link_retry_count", 0, "0"), ("link_retry_count", 101, "101"),
    ("mem_utilization", 1.5, "1.5"), ("mem_utilization", -0.1, "-0.1"),
    ("transfer_backend", "ucx", "'ucx'"), ("transfer_backend", "", "''"),
    ("cluster_info", "{bad", "{bad"), ("cluster_info", "[1, 2]", "[1, 2]"),
    ("cluster_info", '{"listen_ip_info": [{"ip": "1.2.x.4"}]}', "1.2.x.4"),
    ("cluster_info", '{"listen_ip_info": [{"ip": "300.1.1.1"}]}', "300.1.1.1"),
    ("cluster_info", '{"listen_ip_info": [{"port": 1}]}', "'port'"),
    ("cluster_info", '{"listen_ip_info": 5}', "5"),
]


@pytest.mark.parametrize("name,value,needle", SEMANTIC_ERRORS)
def test_semantic_error_is_param_invalid(name, value, needle):
    cfg = LlmConfig()
    before = getattr(cfg, name)
    with param_invalid(needle):
        setattr(cfg, name, value)
    assert getattr(cfg, name) == before


@pytest.mark.parametrize("name", ["mem_pool_cfg", "host_mem_pool_cfg"])
@pytest.mark.parametrize("value,needle", [
    ("{", "{"),
    ("[]", "[]"),
    ("42", "42"),
    ("{}", "memory_size"),
    ('{"memory_size": 0}', '"memory_size": 0'),
    ('{"memory_size": -1}', "-1"),
    ('{"memory_size": "1048576"}', "'1048576'"),
    ('{"memory_size": 1048576.0}', "1048576.0"),
    ('{"memory_size": true}', "True"),
    ('{"memory_size": 1048576, "page_shift": 9}', "9"),
    ('{"memory_size": 4294967296, "page_shift": 31}', "31"),
    ('{"memory_size": 1048576, "page_shift": "16"}', "'16'"),
    ('{"memory_size": 1048576, "page_shift": 16.0}', "16.0"),
    ('{"memory_size": 100}', "100"),
    ('{"memory_size": 281474976710656, "page_shift": 10}', "281474976710656"),
    ('{"memory_size": 18446744073709551616}', "18446744073709551616"),
])
def test_pool_cfg_validated_at_set(name, value, needle):
    cfg = LlmConfig()
    with param_invalid(needle, name):
        setattr(cfg, name, value)
    assert getattr(cfg, name) == ""
    assert list(cfg.generate_options().items()) == [MU]


def test_pool_cfg_extra_keys_kept_verbatim():
    text = '{"memory_size": 2097152, "page_shift": 21, "note": "x"}'
    assert options_of(mem_pool_cfg=text) == [("llm.MemPoolConfig", text), MU]


def test_cluster_info_ip_conversion():
    cfg = LlmConfig()
    cfg.cluster_info = json.dumps({
        "cluster_id": 7,
        "listen_ip_info": [{"ip": "192.168.1.1", "port": 26000}, {"ip": 16777343, "port": 1}],
    })
    info = json.loads(cfg.cluster_info)
    assert info["listen_ip_info"][0] == {"ip": 0x0101A8C0, "port": 26000}
    assert info["listen_ip_info"][1] == {"ip": 16777343, "port": 1}
    assert cfg.cluster_info == json.dumps(info)
    assert cfg.generate_options()["llm.ClusterInfo"] == cfg.cluster_info
    # No listen_ip_info: re-serialized unchanged.
    cfg.cluster_info = '{"a":1}'
    assert cfg.cluster_info == '{"a": 1}'


def test_parse_listen_ip_info():
    assert _parse_listen_ip_info("10.0.0.1:26000") == ("10.0.0.1", 26000)
    assert _parse_listen_ip_info("h:0") == ("h", 0)
    for bad in ("10.0.0.1", "10.0.0.1:", ":1", "a:b", "1.2.3.4:65536", "a:1:2", ""):
        with param_invalid(repr(bad)[1:-1]):
            _parse_listen_ip_info(bad)
    with pytest.raises(TypeError, match="listen_ip_info"):
        _parse_listen_ip_info(26000)  # type: ignore[arg-type]


# ---- LLMClusterInfo ---------------------------------------------------------------------------

def le_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "little")


def test_cluster_info_defaults_and_props():
    info = LLMClusterInfo()
    assert info.remote_cluster_id is None
    assert info.remote_role_type is None
    assert info.local_ip_info_list == [] and info.remote_ip_info_list == []
    info.remote_cluster_id = 2**64 - 1
    assert info.remote_cluster_id == 2**64 - 1
    info.remote_role_type = LLMRole.PROMPT
    assert info.remote_role_type is LLMRole.PROMPT
    info.remote_role_type = 1
    assert info.remote_role_type == 1


def test_cluster_info_ip_forms():
    info = LLMClusterInfo()
    info.append_local_ip_info("192.168.1.2", 0)
    info.append_remote_ip_info("10.0.0.1", 26000)
    info.append_remote_ip_info(0x0100007F, 65535)
    assert info.local_ip_info_list == [(0x0201A8C0, 0)]
    assert info.local_ip_info_list == [(le_int("192.168.1.2"), 0)]
    assert info.remote_ip_info_list == [(le_int("10.0.0.1"), 26000), (0x0100007F, 65535)]
    assert all(isinstance(ip, int) and isinstance(port, int)
               for ip, port in info.remote_ip_info_list)
    assert LLMClusterInfo._ip_to_str(info.remote_ip_info_list[1][0]) == "127.0.0.1"
    assert LLMClusterInfo._ip_to_str(le_int("10.0.0.1")) == "10.0.0.1"
    for ip in ("0.0.0.0", "255.255.255.255", "1.2.3.4"):
        assert LLMClusterInfo._ip_to_str(le_int(ip)) == ip
    assert "10.0.0.1:26000" in repr(info)


@pytest.mark.parametrize("method", ["append_local_ip_info", "append_remote_ip_info"])
def test_cluster_info_append_errors(method):
    info = LLMClusterInfo()
    append = getattr(info, method)
    for bad_port in (-1, 65536):
        with pytest.raises(ValueError) as err:
            append("1.2.3.4", bad_port)
        assert "port" in str(err.value) and str(bad_port) in str(err.value)
    for bad_port in ("80", 1.0, None):
        with pytest.raises(TypeError, match="port"):
            append("1.2.3.4", bad_port)
    for bad_ip in (1.5, None, b"1.2.3.4", ["1.2.3.4"]):
        with pytest.raises(TypeError, match="ip"):
            append(bad_ip, 1)
    for bad_ip in ("1.2.3.256", "abc", "", "1.2.3.4.5", "1.2.3.4\x00"):
        with param_invalid(repr(bad_ip)):
            append(bad_ip, 1)
    for bad_ip in (-1, 2**32):
        with pytest.raises(ValueError) as err:
            append(bad_ip, 1)
        assert str(bad_ip) in str(err.value)
    assert info.local_ip_info_list == [] and info.remote_ip_info_list == []


def test_cluster_info_setter_errors():
    info = LLMClusterInfo()
    for bad in (-1, 2**64):
        with pytest.raises(ValueError) as err:
            info.remote_cluster_id = bad
        assert str(bad) in str(err.value) and "remote_cluster_id" in str(err.value)
    for bad in ("1", 1.0, None):
        with pytest.raises(TypeError, match="remote_cluster_id"):
            info.remote_cluster_id = bad
    for bad in ("PROMPT", 1.0):
        with pytest.raises(TypeError, match="remote_role_type"):
            info.remote_role_type = bad
    with pytest.raises(ValueError, match=str(2**40)):
        info.remote_role_type = 2**40
    with pytest.raises(TypeError, match="ip"):
        LLMClusterInfo._ip_to_str("1.2.3.4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=str(2**32)):
        LLMClusterInfo._ip_to_str(2**32)
