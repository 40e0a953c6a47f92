# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.v2.llm_types``: the cache, key and transfer types, and the names that
module imports at its top (DataType, LLMException, LLMStatusCode), which code imports from it
too. The objects are llm_datadist's own."""
from typing import Dict

from ..data_type import DataType
from ..llm_types import (
    BlocksCacheKey,
    Cache,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    CacheTask,
    LayerSynchronizer,
    MemInfo,
    Memtype,
    Placement,
    PushType,
    RegisterMemStatus,
    TransferConfig,
    TransferWithCacheKeyConfig,
)
from ..status import LLMException, LLMStatusCode

# Upstream's legacy name of Cache; llm_datadist.KvCache is the same object.
KvCache = Cache

# The number query_register_mem_status reads back -> its RegisterMemStatus (upstream's table).
int_to_mem_status_dict: Dict[int, RegisterMemStatus] = {status.value: status for status in RegisterMemStatus}

# Upstream's __all__ (the names a star import gives).
__all__ = ["CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "KvCache", "BlocksCacheKey",
           "Placement", "CacheTask", "TransferConfig", "LayerSynchronizer", "Cache"]
