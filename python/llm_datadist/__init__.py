# SPDX-License-Identifier: Apache-2.0
"""llm_datadist: KV-cache transfer for disaggregated LLM inference, with the Python API of CANN
LLM-DataDist (CacheManager mode), on CUDA GPUs and plain CPU hosts.

Importing this package imports neither torch nor CUDA and changes no environment variable.
"""
from __future__ import annotations

from typing import Any, Dict

from . import _core
from ._logging import configure_from_env as _configure_logging
from .configs import LLMClusterInfo, LlmConfig, LLMRole
from .data_type import DataType
from .llm_datadist import LLMDataDist
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
    RegisterMemStatus,
    TransferConfig,
    TransferWithCacheKeyConfig,
)
from .status import LLMException, LLMStatusCode, Status

LLMConfig = LlmConfig
__version__: str = _core.__version__  # pyproject.toml's, compiled into the core

__all__ = [
    "LLMClusterInfo", "LLMStatusCode", "LLMException", "LLMRole", "LlmConfig", "LLMConfig", "DataType",
    "Status", "CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "KvCache", "Cache", "BlocksCacheKey",
    "LLMDataDist", "Placement", "RegisterMemStatus", "LayerSynchronizer", "TransferConfig", "CacheTask",
    "TransferWithCacheKeyConfig", "Memtype", "MemInfo",
]

_configure_logging()
# The core's log lines go to the `llm_datadist.core` logger (level: LLMDD_LOG_LEVEL, default
# warning; the core drops lower lines before formatting them).
_core.install_python_log_sink()


def build_info() -> Dict[str, Any]:
    """What this build is and what it found at run time: version, native library, CUDA, UCX."""
    from . import _core
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    return {
        "version": __version__,
        "native_module": _core.__file__,
        "include_dir": os.path.join(here, "include"),
        "library_dir": here,
        "cuda": dict(_core.cuda_info()),
        "ucx": dict(_core.ucx_info()),
    }


def __getattr__(name: str) -> Any:
    # Upstream's legacy (v1, flow-graph) types live in a separate package there; they have no
    # equivalent here. KvCache is the v1 name of Cache.
    if name == "KvCache":
        return Cache
    if name in ("TensorDesc", "Tensor", "KvCacheManager"):
        raise AttributeError(f"llm_datadist.{name} belongs to upstream's legacy KvCacheManager mode, "
                             f"which this implementation does not provide; use CacheManager mode.")
    raise AttributeError(f"module 'llm_datadist' has no attribute {name!r}")
