# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.v2.llm_types``: the cache, key and transfer types, and the names that
module imports at its top (DataType, LLMException, LLMStatusCode), which code imports from it
too. The objects are llm_datadist's own."""
from typing import Dict

# Names outside __all__ are re-exported as `X as X`: type checkers then know that importing them
# from here is meant (upstream code does), which __all__ alone would deny.
from ..data_type import DataType as DataType
from ..llm_types import BlocksCacheKey, Cache, CacheDesc, CacheKey, CacheKeyByIdAndIndex, CacheTask
from ..llm_types import LayerSynchronizer, Placement, TransferConfig
from ..llm_types import MemInfo as MemInfo
from ..llm_types import Memtype as Memtype
from ..llm_types import PushType as PushType
from ..llm_types import RegisterMemStatus as RegisterMemStatus
from ..llm_types import TransferWithCacheKeyConfig as TransferWithCacheKeyConfig
from ..status import LLMException as LLMException
from ..status import LLMStatusCode as LLMStatusCode

# Upstream's legacy name of Cache; llm_datadist.KvCache is the same object.
KvCache = Cache

# The number query_register_mem_status reads back -> its RegisterMemStatus (upstream's table).
int_to_mem_status_dict: Dict[int, RegisterMemStatus] = {status.value: status for status in RegisterMemStatus}

# Upstream's __all__ (the names a star import gives).
__all__ = ["CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "KvCache", "BlocksCacheKey",
           "Placement", "CacheTask", "TransferConfig", "LayerSynchronizer", "Cache"]
