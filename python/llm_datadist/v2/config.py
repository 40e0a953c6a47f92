# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.v2.config``. Upstream defines two internal classes there,
ClusterConfig and EngineConfig, which turn the options dict into its engine's settings; this
implementation parses options in LlmConfig and the core, and has neither. The public names that
module imports at its top (LLMRole, LlmConfig) are re-exported."""
from typing import Any

from ..configs import LlmConfig, LLMRole

__all__ = ["LLMRole", "LlmConfig"]

_UPSTREAM_INTERNAL = ("ClusterConfig", "EngineConfig")


def __getattr__(name: str) -> Any:
    if name in _UPSTREAM_INTERNAL:
        raise AttributeError(f"llm_datadist.v2.config.{name} is internal to upstream's engine and has no "
                             f"equivalent here; pass options through LlmConfig.generate_options().")
    raise AttributeError(f"module 'llm_datadist.v2.config' has no attribute {name!r}")
