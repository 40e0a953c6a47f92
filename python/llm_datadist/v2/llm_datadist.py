# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.v2.llm_datadist``: LLMDataDist, and the names that module imports at
its top. The objects are llm_datadist's own."""
from ..cache_manager import CacheManager
from ..configs import LLMClusterInfo, LLMRole
from ..llm_datadist import LLMDataDist
from ..llm_datadist import _finalize_at_exit as _shutdown_handler  # noqa: F401 - upstream's exit hook, by its name
from ..status import LLMException, LLMStatusCode, code_2_status
from .llm_types import RegisterMemStatus, int_to_mem_status_dict

__all__ = ["LLMDataDist"]
