# SPDX-License-Identifier: Apache-2.0
"""Status codes and the exception every failing call raises.

`LLMStatusCode` is built from the native error table (csrc/include/llm_datadist/status_table.def),
the one place where codes are defined; nothing here restates a number. Member names and values
are upstream LLM-DataDist's, so `e.status_code == LLMStatusCode.LLM_KV_CACHE_NOT_EXIST` keeps
working for code written against upstream.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, Union

from . import _core

__all__ = [
    "LLMStatusCode",
    "LLMException",
    "Status",
    "code_2_status",
    "handle_llm_status",
    "raise_if_false",
    "status_info",
    "all_status_info",
]

_TABLE: List[Dict[str, Any]] = [dict(row) for row in _core.status_table()]
_BY_VALUE: Dict[int, Dict[str, Any]] = {row["value"]: row for row in _TABLE}


class _StatusCodeBase(enum.IntEnum):
    """Upstream LLM-DataDist status codes; each member's value is the raw native code.
    `llm-datadist explain <code>` describes one."""

    # "LLMStatusCode.LLM_X" on every Python version (3.11 changed IntEnum's str() to the number);
    # upstream's messages and users' logs read this way.
    def __str__(self) -> str:
        return f"LLMStatusCode.{self.name}"

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else format(int(self), spec)


if TYPE_CHECKING:
    class LLMStatusCode(_StatusCodeBase):
        # For type checkers and editors only: the members' names, without their numbers (those
        # are the table's, below). Written from the table by `python .ci/check_types.py --write`;
        # the check in CI fails when these differ from the table's names.
        # BEGIN generated LLMStatusCode names
        LLM_SUCCESS = enum.auto()
        LLM_FAILED = enum.auto()
        LLM_WAIT_PROCESS_TIMEOUT = enum.auto()
        LLM_KV_CACHE_NOT_EXIST = enum.auto()
        LLM_REPEAT_REQUEST = enum.auto()
        LLM_REQUEST_ALREADY_COMPLETED = enum.auto()
        LLM_PARAM_INVALID = enum.auto()
        LLM_ENGINE_FINALIZED = enum.auto()
        LLM_NOT_YET_LINK = enum.auto()
        LLM_ALREADY_LINK = enum.auto()
        LLM_LINK_FAILED = enum.auto()
        LLM_UNLINK_FAILED = enum.auto()
        LLM_NOTIFY_PROMPT_UNLINK_FAILED = enum.auto()
        LLM_CLUSTER_NUM_EXCEED_LIMIT = enum.auto()
        LLM_PROCESSING_LINK = enum.auto()
        LLM_DEVICE_OUT_OF_MEMORY = enum.auto()
        LLM_PREFIX_ALREADY_EXIST = enum.auto()
        LLM_PREFIX_NOT_EXIST = enum.auto()
        LLM_SEQ_LENOVERLIMIT = enum.auto()
        LLM_NO_FREE_BLOCK = enum.auto()
        LLM_BLOCKS_OUT_OF_MEMORY = enum.auto()
        LLM_EXIST_LINK = enum.auto()
        LLM_FEATURE_NOT_ENABLED = enum.auto()
        LLM_TIMEOUT = enum.auto()
        LLM_LINK_BUSY = enum.auto()
        LLM_OUT_OF_MEMORY = enum.auto()
        LLM_DEVICE_MEM_ERROR = enum.auto()
        LLM_SUSPECT_REMOTE_ERROR = enum.auto()
        LLM_UNKNOWN_ERROR = enum.auto()
        # END generated LLMStatusCode names
else:
    LLMStatusCode = _StatusCodeBase(
        "LLMStatusCode",
        [(row["python_name"], row["value"]) for row in _TABLE if row["python_name"]],
        module=__name__,
        qualname="LLMStatusCode",
    )
    LLMStatusCode.__doc__ = _StatusCodeBase.__doc__


def all_status_info() -> List[Dict[str, Any]]:
    """Every row of the error table (copies), in table order."""
    return [dict(row) for row in _TABLE]


def status_info(code: Union[int, str, "LLMStatusCode"]) -> Dict[str, Any]:
    """The table row for a code given as a number, an LLMStatusCode, a name (Python or C++
    spelling, with or without the "LLMStatusCode." prefix) or a hex/decimal string.

    Raises ValueError when nothing in the table matches.
    """
    if isinstance(code, bool):
        raise TypeError("code only support [int, str, LLMStatusCode], but got bool.")
    if isinstance(code, int):
        row = _BY_VALUE.get(int(code))
        if row is None:
            raise ValueError(f"unknown status code {int(code)} (0x{int(code) & 0xFFFFFFFF:08X})")
        return dict(row)
    if not isinstance(code, str):
        raise TypeError(f"code only support [int, str, LLMStatusCode], but got {type(code)}.")
    text = code.strip()
    if text.startswith("LLMStatusCode."):
        text = text[len("LLMStatusCode."):]
    for row in _TABLE:
        if text in (row["python_name"], row["cpp_name"]):
            return dict(row)
    try:
        number = int(text, 0)
    except ValueError:
        raise ValueError(f"unknown status code {code!r}") from None
    return status_info(number)


def code_2_status(code: int) -> "LLMStatusCode":
    """Upstream's mapping: a known code becomes its member, anything else LLM_FAILED."""
    try:
        return LLMStatusCode(code)
    except ValueError:
        return LLMStatusCode.LLM_FAILED


class LLMException(RuntimeError):
    """Raised by every failing call except link_clusters/unlink_clusters (which return codes).

    Upstream-compatible: `LLMException(*args, status_code=...)` and `.status_code`. Added:
    `.recoverable`, `.action`, `.suggestion`, `.context` and `.to_dict()`, all derived from the
    error table, so a handler can decide what to do without parsing the message.
    """

    def __init__(
        self,
        *args: Any,
        status_code: Union[int, "LLMStatusCode"] = 0,
        context: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(*args)
        self._status_code = code_2_status(int(status_code))
        self._context: Dict[str, Any] = dict(context or {})

    @property
    def status_code(self) -> "LLMStatusCode":
        return self._status_code

    @property
    def _info(self) -> Dict[str, Any]:
        # A native code with no Python member (e.g. 0x5010B014) keeps its own metadata.
        native = self._context.get("native_code")
        if isinstance(native, int) and native in _BY_VALUE:
            return _BY_VALUE[native]
        return _BY_VALUE[int(self._status_code)]

    @property
    def recoverable(self) -> bool:
        override = self._context.get("recoverable")
        if isinstance(override, bool):
            return override
        return bool(self._info["recoverable"])

    @property
    def action(self) -> str:
        override = self._context.get("action")
        return override if isinstance(override, str) else self._info["action"]

    @property
    def suggestion(self) -> str:
        return str(self._info["suggestion"])

    @property
    def context(self) -> Dict[str, Any]:
        return dict(self._context)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def to_dict(self) -> Dict[str, Any]:
        """The structured form (DESIGN.md section 7), e.g. for JSON log lines and API replies."""
        info = self._info
        details = {k: v for k, v in self._context.items() if k not in ("recoverable", "action")}
        details["suggestions"] = [info["suggestion"]]
        return {
            "ok": False,
            "stage": self._context.get("operation"),
            "code": self._status_code.name,
            "status_code": int(self._status_code),
            "message": self.message,
            "recoverable": self.recoverable,
            "action": self.action,
            "http_status": info["http_status"],
            "grpc_code": info["grpc_code"],
            "details": details,
        }

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:  # picklable across processes, context included
        return (_rebuild_exception, (self.args, int(self._status_code), self._context))


def not_initialized(finalized: bool) -> LLMException:
    """A call on an instance that is not (or no longer) initialized. Upstream raises RuntimeError
    with this message; LLMException is a RuntimeError, so code catching that still does."""
    code = LLMStatusCode.LLM_ENGINE_FINALIZED if finalized else LLMStatusCode.LLM_FAILED
    return LLMException("llm datadist is not initialized" + (" (it was finalized)" if finalized else ""),
                        status_code=code)


def _rebuild_exception(args: Tuple[Any, ...], status_code: int, context: Dict[str, Any]) -> LLMException:
    return LLMException(*args, status_code=status_code, context=context)


def _parse_context_value(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    try:
        return int(value)
    except ValueError:
        return value


def _exception_from_native(code: int, message: str, context: Iterable[Tuple[str, str]]) -> LLMException:
    """Called by the native error translator: one place builds every core exception."""
    ctx: Dict[str, Any] = {key: _parse_context_value(value) for key, value in context}
    status = code_2_status(code)
    if int(status) != code:
        # Upstream maps codes it has no member for to LLM_FAILED; keep the original visible.
        ctx["native_code"] = code
        row = _BY_VALUE.get(code)
        ctx["native_name"] = row["cpp_name"] if row else f"0x{code & 0xFFFFFFFF:08X}"
    operation = ctx.get("operation")
    prefix = f"{operation} failed, error code is {status}, " if operation else f"{status}: "
    return LLMException(prefix + message, status_code=status, context=ctx)


class Status:
    """Upstream's status wrapper."""

    def __init__(self, status: Union[int, "LLMStatusCode"]) -> None:
        self._status_code = code_2_status(int(status))

    def is_ok(self) -> bool:
        return self._status_code == LLMStatusCode.LLM_SUCCESS

    @property
    def status_code(self) -> "LLMStatusCode":
        return self._status_code

    def __repr__(self) -> str:
        return f"Status({self._status_code})"


def handle_llm_status(status: int, func_name: str, other_info: Any = None) -> None:
    """Upstream helper: raise LLMException when a native status is not success."""
    code = code_2_status(int(status))
    if code != LLMStatusCode.LLM_SUCCESS:
        info = f", {other_info}" if other_info else ""
        raise LLMException(f"{func_name} failed, error code is {code}{info}.", status_code=code)


def raise_if_false(condition: bool, message: str, *args: Any,
                   status_code: "LLMStatusCode" = None) -> None:  # type: ignore[assignment]
    """Semantic check: raise LLMException (LLM_PARAM_INVALID by default) when false."""
    if not condition:
        code = LLMStatusCode.LLM_PARAM_INVALID if status_code is None else status_code
        raise LLMException(message.format(*args) if args else message, status_code=code)
