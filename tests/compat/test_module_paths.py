# SPDX-License-Identifier: Apache-2.0
"""Upstream's module paths (src/python/llm_datadist/llm_datadist/v2/{llm_types,cache_manager,
llm_datadist,config}.py and utils/{utils,log}.py) import here and give this package's own
objects, not copies: omni-infer does ``from llm_datadist.v2.llm_types import Cache, CacheDesc,
BlocksCacheKey`` and upstream's tests import check helpers from ``llm_datadist.utils.utils``."""
import importlib
import logging

import pytest

import llm_datadist as ld
from llm_datadist import cache_manager, configs, llm_datadist, llm_types, status

# module -> {name: the object it must be}. The names are those upstream's module defines or
# imports at its top that this package has.
SAME_OBJECTS = {
    "llm_datadist.v2.llm_types": {
        "CacheDesc": ld.CacheDesc, "CacheKey": ld.CacheKey, "CacheKeyByIdAndIndex": ld.CacheKeyByIdAndIndex,
        "KvCache": ld.Cache, "BlocksCacheKey": ld.BlocksCacheKey, "Placement": ld.Placement,
        "CacheTask": ld.CacheTask, "TransferConfig": ld.TransferConfig, "LayerSynchronizer": ld.LayerSynchronizer,
        "Cache": ld.Cache, "TransferWithCacheKeyConfig": ld.TransferWithCacheKeyConfig,
        "RegisterMemStatus": ld.RegisterMemStatus, "Memtype": ld.Memtype, "MemInfo": ld.MemInfo,
        "PushType": llm_types.PushType, "DataType": ld.DataType, "LLMException": ld.LLMException,
        "LLMStatusCode": ld.LLMStatusCode,
    },
    "llm_datadist.v2.cache_manager": {
        "CacheManager": cache_manager.CacheManager, "CacheDesc": ld.CacheDesc, "Cache": ld.Cache,
        "CacheKey": ld.CacheKey, "CacheKeyByIdAndIndex": ld.CacheKeyByIdAndIndex,
        "BlocksCacheKey": ld.BlocksCacheKey, "Placement": ld.Placement, "TransferConfig": ld.TransferConfig,
        "CacheTask": ld.CacheTask, "LayerSynchronizer": ld.LayerSynchronizer,
        "TransferWithCacheKeyConfig": ld.TransferWithCacheKeyConfig, "PushType": llm_types.PushType,
        "MemInfo": ld.MemInfo, "Memtype": ld.Memtype,
    },
    "llm_datadist.v2.llm_datadist": {
        "LLMDataDist": ld.LLMDataDist, "CacheManager": cache_manager.CacheManager, "LLMRole": ld.LLMRole,
        "LLMClusterInfo": ld.LLMClusterInfo, "RegisterMemStatus": ld.RegisterMemStatus,
        "LLMStatusCode": ld.LLMStatusCode, "LLMException": ld.LLMException, "code_2_status": status.code_2_status,
        "_shutdown_handler": llm_datadist._finalize_at_exit,
    },
    "llm_datadist.v2.config": {"LLMRole": ld.LLMRole, "LlmConfig": ld.LlmConfig},
}

UPSTREAM_ALL = {
    "llm_datadist.v2.llm_types": ["CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "KvCache", "BlocksCacheKey",
                                  "Placement", "CacheTask", "TransferConfig", "LayerSynchronizer", "Cache"],
    "llm_datadist.v2.llm_datadist": ["LLMDataDist"],
}


@pytest.mark.parametrize("module_name", sorted(SAME_OBJECTS))
def test_upstream_module_gives_our_objects(module_name):
    module = importlib.import_module(module_name)
    for name, expected in SAME_OBJECTS[module_name].items():
        assert getattr(module, name) is expected, f"{module_name}.{name}"


@pytest.mark.parametrize("module_name", sorted(UPSTREAM_ALL))
def test_star_import_gives_upstreams_names(module_name):
    namespace = {}
    exec(f"from {module_name} import *", namespace)  # noqa: S102 - the import form under test
    assert sorted(n for n in namespace if n != "__builtins__") == sorted(UPSTREAM_ALL[module_name])


def test_omni_infer_import_line():
    from llm_datadist.v2.llm_types import BlocksCacheKey, Cache, CacheDesc
    desc = CacheDesc(2, [4, 16], ld.DataType.DT_FLOAT16)
    assert isinstance(desc, ld.CacheDesc) and Cache is ld.Cache and BlocksCacheKey is ld.BlocksCacheKey


def test_int_to_mem_status_dict_maps_upstreams_numbers():
    from llm_datadist.v2.llm_types import int_to_mem_status_dict
    assert int_to_mem_status_dict == {0: ld.RegisterMemStatus.OK, 1: ld.RegisterMemStatus.PREPARING,
                                      2: ld.RegisterMemStatus.FAILED}


def test_v2_config_names_upstreams_internal_classes_it_lacks():
    from llm_datadist.v2 import config
    for name in ("EngineConfig", "ClusterConfig"):
        with pytest.raises(AttributeError, match=f"{name} is internal to upstream"):
            getattr(config, name)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        config.Nothing  # noqa: B018


def test_utils_checks_behave_as_upstreams():
    from llm_datadist.utils.utils import (check_dict, check_int32, check_isinstance, check_list_uint64,
                                          check_positive_or_set_default, check_uint8, check_uint64)
    check_uint64("cluster_id", 2**64 - 1)
    check_uint64("cluster_id", True)  # isinstance(True, int), as upstream
    with pytest.raises(ValueError, match="cluster_id's value is out of range,-1 is not a uint64 value"):
        check_uint64("cluster_id", -1)
    with pytest.raises(TypeError, match=r"cluster_id only support \['int'\]"):
        check_uint64("cluster_id", "1")
    with pytest.raises(ValueError):
        check_int32("timeout", 2**31)
    with pytest.raises(ValueError):
        check_uint8("tensor_num_per_layer", 256)
    with pytest.raises(ValueError):
        check_list_uint64("blocks", [0, -2])
    assert check_isinstance("cfg", None, [int]) is None
    with pytest.raises(TypeError, match=r"x only support \['int', 'str'\]"):
        check_isinstance("x", 1.5, [int, str])
    with pytest.raises(TypeError, match="inner type"):
        check_isinstance("shape", [1, "2"], list, inner_class=int)
    with pytest.raises(TypeError, match="dict key"):
        check_dict("options", {1: "a"}, str, str)
    assert check_positive_or_set_default("size", None) == -1
    with pytest.raises(ValueError, match="should be >= 0"):
        check_positive_or_set_default("size", -3)


def test_utils_log_writes_to_the_package_logger(caplog):
    from llm_datadist.utils import log
    assert log.get_logger() is logging.getLogger("llm_datadist")
    with caplog.at_level(logging.INFO, logger="llm_datadist"):
        log.info("info %d", 1)
        log.warn("warn %s", "two")
        log.error("error")
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "llm_datadist"]
    assert records == [(logging.INFO, "info 1"), (logging.WARNING, "warn two"), (logging.ERROR, "error")]
    assert all(r.filename == "test_module_paths.py" for r in caplog.records if r.name == "llm_datadist")


def test_top_level_modules_upstream_also_has():
    # Upstream's llm_datadist.configs / .status / .data_type are at the same paths here.
    assert configs.LlmConfig is ld.LlmConfig and status.LLMException is ld.LLMException
    assert importlib.import_module("llm_datadist.data_type").DataType is ld.DataType
