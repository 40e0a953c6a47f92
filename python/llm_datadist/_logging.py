# SPDX-License-Identifier: Apache-2.0
"""The `llm_datadist` logger. Core (C++) lines arrive through emit_core_line under
`llm_datadist.core`. Set LLMDD_LOG_FORMAT=json for JSON lines (one object per line)."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Set

logger = logging.getLogger("llm_datadist")
core_logger = logging.getLogger("llm_datadist.core")


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("operation", "remote_cluster_id", "cache_key", "request_id", "error"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_from_env() -> None:
    """Attach a handler only when the user asked for one by environment variable; a library
    must not configure logging otherwise."""
    fmt = os.environ.get("LLMDD_LOG_FORMAT", "")
    if fmt and not logger.handlers:
        handler = logging.StreamHandler()
        if fmt.lower() == "json":
            handler.setFormatter(JsonLineFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(os.environ.get("LLMDD_LOG_LEVEL", "WARNING").upper())


def emit_core_line(level: int, line: str) -> None:
    core_logger.log(level, line)


_warned_kinds: Set[str] = set()


def warn_once(kind: str, message: str) -> None:
    """One warning per `kind` per process: for inputs this library accepts where upstream
    LLM-DataDist would refuse them or do something else, so that code developed here is told
    before it runs on Ascend, without a line per call."""
    if kind in _warned_kinds:
        return
    _warned_kinds.add(kind)
    logger.warning("%s", message, extra={"operation": kind})


__all__ = ["logger", "core_logger", "JsonLineFormatter", "configure_from_env", "emit_core_line", "warn_once"]
