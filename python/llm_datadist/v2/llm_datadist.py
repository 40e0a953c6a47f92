# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.v2.llm_datadist``: LLMDataDist, and the names that module imports at
its top. The objects are llm_datadist's own."""
# Re-exported as `X as X`, so that type checkers accept importing them from here.
from ..cache_manager import CacheManager as CacheManager
from ..configs import LLMClusterInfo as LLMClusterInfo
from ..configs import LLMRole as LLMRole
from ..llm_datadist import LLMDataDist
from ..llm_datadist import _finalize_at_exit as _shutdown_handler  # noqa: F401 - upstream's exit hook, by its name
from ..status import LLMException as LLMException
from ..status import LLMStatusCode as LLMStatusCode
from ..status import code_2_status as code_2_status
from .llm_types import RegisterMemStatus as RegisterMemStatus
from .llm_types import int_to_mem_status_dict as int_to_mem_status_dict

__all__ = ["LLMDataDist"]
