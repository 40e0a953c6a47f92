# SPDX-License-Identifier: Apache-2.0
"""Upstream's module paths under ``llm_datadist.v2`` (llm_types, cache_manager, llm_datadist,
config). Code written for upstream imports from them directly, e.g. omni-infer's
``from llm_datadist.v2.llm_types import Cache, CacheDesc, BlocksCacheKey``. Each module re-exports
this package's own objects under upstream's names (the same classes, not copies), so
``llm_datadist.v2.llm_types.Cache is llm_datadist.Cache``."""
