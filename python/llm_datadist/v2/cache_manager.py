# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.v2.cache_manager``: CacheManager, and the types that module imports
at its top. The objects are llm_datadist's own."""
from ..cache_manager import CacheManager
from .llm_types import (
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
    TransferConfig,
    TransferWithCacheKeyConfig,
)

__all__ = ["CacheManager"]
