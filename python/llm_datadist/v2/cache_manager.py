# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.v2.cache_manager``: CacheManager, and the types that module imports
at its top. The objects are llm_datadist's own."""
# Re-exported as `X as X`, so that type checkers accept importing them from here.
from ..cache_manager import CacheManager
from .llm_types import BlocksCacheKey as BlocksCacheKey
from .llm_types import Cache as Cache
from .llm_types import CacheDesc as CacheDesc
from .llm_types import CacheKey as CacheKey
from .llm_types import CacheKeyByIdAndIndex as CacheKeyByIdAndIndex
from .llm_types import CacheTask as CacheTask
from .llm_types import LayerSynchronizer as LayerSynchronizer
from .llm_types import MemInfo as MemInfo
from .llm_types import Memtype as Memtype
from .llm_types import Placement as Placement
from .llm_types import PushType as PushType
from .llm_types import TransferConfig as TransferConfig
from .llm_types import TransferWithCacheKeyConfig as TransferWithCacheKeyConfig

__all__ = ["CacheManager"]
