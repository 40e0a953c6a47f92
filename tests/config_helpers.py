# SPDX-License-Identifier: Apache-2.0
"""The LLMConfig the tests use, importable from any test directory (`from config_helpers
import make_config`; tests/ is on sys.path through tests/conftest.py) and by the worker
processes of tests/integration (worker_main.py puts tests/ on its path).
A module of its own, not a conftest, because `from conftest import ...` resolves to whichever
directory's conftest was imported last."""
import json

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
