# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.utils`` package: ``utils.utils`` (upstream's argument-check
helpers) and ``utils.log`` (its logging helpers, writing to this package's logger)."""
from . import log, utils  # noqa: F401
