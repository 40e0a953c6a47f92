# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.utils.log``: info / warn / error and get_logger. They write to this
package's ``llm_datadist`` logger (configured by LLMDD_LOG_LEVEL / LLMDD_LOG_FORMAT), so lines
from code that logs through upstream's helpers land with the library's own."""
import logging
from typing import Any

from .._logging import logger as _logger

__all__ = ["get_logger", "info", "warn", "error"]


def get_logger() -> logging.Logger:
    return _logger


def info(msg: object, *args: object, **kwargs: Any) -> None:
    _logger.info(msg, *args, stacklevel=2, **kwargs)


def warn(msg: object, *args: object, **kwargs: Any) -> None:
    _logger.warning(msg, *args, stacklevel=2, **kwargs)


def error(msg: object, *args: object, **kwargs: Any) -> None:
    _logger.error(msg, *args, stacklevel=2, **kwargs)
