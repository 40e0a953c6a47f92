# SPDX-License-Identifier: Apache-2.0
"""Argument checks shared by the public API, following upstream LLM-DataDist's convention.

Upstream raises three kinds of error for a bad argument, and code written against it catches
them by kind, so every public entry point here does the same:

* wrong Python type -> ``TypeError("<name> only support [<types>], but got <type>.")``;
  a ``bool`` passes where an int is asked for, since upstream checks with ``isinstance``, and
  ``None`` only where the caller says so;
* an integer outside the range of its C type (uint64, int64, uint32, int32, uint16, uint8)
  -> ``ValueError`` naming the argument, the value and the range;
* a semantic/precondition failure -> ``LLMException(..., status_code=LLM_PARAM_INVALID)`` with
  a message that names the bad value (see :func:`param_invalid`).

One owner per check. Python raises the TypeError / ValueError that upstream's Python raises
before its native call, and the LLM_PARAM_INVALID checks only the Python API has (which
instance made a cache, rules of upstream's Python that its C++ API does not share). Every
other LLM_PARAM_INVALID belongs to the native core, which checks it for every caller (this
API, the C++ API, a direct ``_core`` call) with the message this API documents; Python does not
repeat it. Limits Python needs come from ``_core`` or from :data:`INT_RANGES`, never restated.
Block lists of the transfer calls are converted by the binding in one pass, which raises
:func:`check_int_list`'s errors (same type, same message) for a bad one.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

from .status import LLMException, LLMStatusCode

__all__ = [
    "U64_MAX",
    "INT_RANGES",
    "type_names",
    "check_type",
    "check_int",
    "check_int_list",
    "check_range",
    "check_dict",
    "param_invalid",
]

U64_MAX = 2**64 - 1

#: Inclusive bounds of the C integer types upstream checks against.
INT_RANGES: Dict[str, Tuple[int, int]] = {
    "uint64": (0, 2**64 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint16": (0, 2**16 - 1),
    "uint8": (0, 2**8 - 1),
}

TypeSpec = Union[type, Sequence[type]]


def _as_tuple(types: TypeSpec) -> Tuple[type, ...]:
    if isinstance(types, type):
        return (types,)
    return tuple(types)


def type_names(types: TypeSpec) -> str:
    """``[int, list, tuple]``: the bracketed list used in TypeError messages."""
    return "[" + ", ".join(t.__name__ for t in _as_tuple(types)) + "]"


def _matches(value: Any, types: Tuple[type, ...]) -> bool:
    # isinstance, as upstream's check_isinstance (utils/utils.py): a bool passes for an int.
    return isinstance(value, types)


def check_type(value: Any, name: str, types: TypeSpec, allow_none: bool = False) -> Any:
    """Raise TypeError unless `value` is an instance of one of `types` (None only when
    `allow_none`). As upstream, a bool is an int. Returns `value`."""
    if value is None and allow_none:
        return value
    wanted = types if type(types) is tuple else _as_tuple(types)
    if type(value) in wanted:  # the common case, exact type: one lookup
        return value
    if not _matches(value, wanted):
        raise TypeError(
            f"{name} only support {type_names(wanted)}, but got {type(value).__name__}.")
    return value


def _check_int_range(value: int, name: str, ctype: str) -> None:
    try:
        low, high = INT_RANGES[ctype]
    except KeyError:
        raise ValueError(f"unknown integer type {ctype!r}, known: {sorted(INT_RANGES)}") from None
    if not low <= value <= high:
        raise ValueError(
            f"{name}'s value is out of range, {value} is not a {ctype} value, "
            f"valid range is [{low}, {high}].")


def check_int(value: Any, name: str, ctype: str = "uint64", allow_none: bool = False) -> Any:
    """TypeError unless `value` is an int (a bool is one, as upstream); ValueError unless it fits C type `ctype`
    (one of INT_RANGES). Returns `value` (None passes through when `allow_none`)."""
    if value is None and allow_none:
        return value
    check_type(value, name, int)
    _check_int_range(value, name, ctype)
    return value


def check_int_list(values: Any, name: str, ctype: str = "int64", allow_none: bool = False,
                   containers: TypeSpec = (list, tuple)) -> Any:
    """TypeError unless `values` is one of `containers` whose every element is an int (the
    message names the element, e.g. ``shape[2]``); ValueError when an element does not fit
    `ctype`. Returns `values` unchanged."""
    if values is None and allow_none:
        return values
    check_type(values, name, containers)
    # Fast path: plain ints in range pass in one tight loop (a 4096-id block list in 0.2 ms, a
    # call-per-element check took 2.2). Anything else (a bool, a numpy integer, an int subclass,
    # a value out of range, an unknown ctype) falls through to the checks below, which find the
    # first offending element and raise the error that names it.
    low, high = INT_RANGES.get(ctype, (1, 0))
    for element in values:
        if type(element) is not int or not low <= element <= high:
            break
    else:
        return values
    for i, element in enumerate(values):
        check_int(element, f"{name}[{i}]", ctype)
    return values


def check_range(value: Any, name: str, allow_none: bool = False) -> Optional[range]:
    """A layer range as upstream accepts it: a `range` (TypeError otherwise) with step 1 and
    ``0 <= start < stop`` (LLMException LLM_PARAM_INVALID otherwise)."""
    if value is None and allow_none:
        return None
    checked: range = check_type(value, name, range)
    if checked.step != 1:
        raise param_invalid(f"{name} must have step 1, but got {checked!r}.")
    if not 0 <= checked.start < checked.stop:
        raise param_invalid(f"{name} must satisfy 0 <= start < stop, but got {checked!r}.")
    return checked


def check_dict(value: Any, name: str, key_types: TypeSpec, value_types: TypeSpec,
               allow_none: bool = False) -> Any:
    """TypeError unless `value` is a dict whose keys are `key_types` and values are
    `value_types`. Returns `value`."""
    if value is None and allow_none:
        return value
    check_type(value, name, dict)
    keys, vals = _as_tuple(key_types), _as_tuple(value_types)
    for key, item in value.items():
        if not _matches(key, keys):
            raise TypeError(f"{name} dict key only support {type_names(keys)}, "
                            f"but got {type(key).__name__} ({key!r}).")
        if not _matches(item, vals):
            raise TypeError(f"{name} dict value only support {type_names(vals)}, "
                            f"but got {type(item).__name__} (for key {key!r}).")
    return value


def param_invalid(message: str, context: Optional[Dict[str, Any]] = None) -> LLMException:
    """The exception for a semantic error: LLMException with LLM_PARAM_INVALID (to be raised)."""
    return LLMException(message, status_code=LLMStatusCode.LLM_PARAM_INVALID, context=context)
