# SPDX-License-Identifier: Apache-2.0
import json

import pytest

import llm_datadist as ld

POOL_BYTES = 64 << 20


def make_config(device_backend: str = "cpu", pool_bytes: int = POOL_BYTES, page_shift: int = None,
                host_pool: bool = True, device_pool: bool = True) -> "ld.LLMConfig":
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    pool = {"memory_size": pool_bytes}
    if page_shift is not None:
        pool["page_shift"] = page_shift
    if device_pool:
        cfg.mem_pool_cfg = json.dumps(pool)
    if host_pool:
        cfg.host_mem_pool_cfg = json.dumps(pool)
    if device_backend:
        cfg.device_backend = device_backend
    return cfg


@pytest.fixture
def datadist():
    """An initialized PROMPT instance (cluster 1) with 64 MiB host and CPU-device pools."""
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    dd.init(make_config().generate_options())
    yield dd
    dd.finalize()


@pytest.fixture
def cache_manager(datadist):
    return datadist.cache_manager
