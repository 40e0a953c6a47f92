# SPDX-License-Identifier: Apache-2.0
"""Upstream's ``llm_datadist.utils.utils``: the argument-check helpers code written for upstream
imports (``check_isinstance``, ``check_uint64``, ...), with upstream's signatures (name first,
then value) and upstream's acceptance: isinstance-based, so a bool passes where an int is asked
for, and ``check_isinstance`` lets None through unless ``allow_none=False``. Wrong type ->
TypeError, out of range -> ValueError, as upstream.

The library's own API does not use these; its checks live in llm_datadist._validation."""
from typing import Any, Dict

from .._validation import INT_RANGES

__all__ = ["check_inner", "check_dict", "check_isinstance", "check_uint64", "check_int64",
           "check_positive_or_set_default", "check_int32", "check_uint32", "check_list_int32",
           "check_list_int64", "check_list_uint64", "check_uint16", "check_uint8"]


def check_inner(arg_name: str, arg_value: Any, inner_class: Any) -> None:
    for item in arg_value:
        if not isinstance(item, inner_class):
            raise TypeError(f"{arg_name} inner type only support {[inner_class]}, but got {type(item)}.")


def check_dict(arg_name: str, arg_value: Dict[Any, Any], k_class: Any, v_class: Any, v_inner_class: Any = None) -> None:
    for key, value in arg_value.items():
        if not isinstance(key, k_class):
            raise TypeError(f"{arg_name} dict key only support {k_class}, but got {type(key)}.")
        if not isinstance(value, v_class):
            raise TypeError(f"{arg_name} dict value only support {v_class}, but got {type(value)}.")
        if v_inner_class is not None:
            check_inner("dict value", value, v_inner_class)


def check_isinstance(arg_name: str, arg_value: Any, classes: Any, inner_class: Any = None, extra_fmt: str = "",
                     allow_none: bool = True) -> Any:
    if allow_none and arg_value is None:
        return arg_value
    candidates = classes if isinstance(classes, list) else [classes]
    for clazz in candidates:
        if isinstance(arg_value, clazz):
            if inner_class:
                check_inner(arg_name, arg_value, inner_class)
            return arg_value
    raise TypeError(f"{extra_fmt}{arg_name} only support {[c.__name__ for c in candidates]}, "
                    f"but got {type(arg_value)}.")


def _check_ctype(arg_name: str, arg_value: Any, ctype: str) -> None:
    check_isinstance(arg_name, arg_value, [int], allow_none=False)
    low, high = INT_RANGES[ctype]
    if not low <= arg_value <= high:
        raise ValueError(f"{arg_name}'s value is out of range,{arg_value} is not a {ctype} value.")


def check_uint64(arg_name: str, arg_value: Any) -> None:
    _check_ctype(arg_name, arg_value, "uint64")


def check_int64(arg_name: str, arg_value: Any) -> None:
    _check_ctype(arg_name, arg_value, "int64")


def check_int32(arg_name: str, arg_value: Any) -> None:
    _check_ctype(arg_name, arg_value, "int32")


def check_uint32(arg_name: str, arg_value: Any) -> None:
    _check_ctype(arg_name, arg_value, "uint32")


def check_uint16(arg_name: str, arg_value: Any) -> None:
    _check_ctype(arg_name, arg_value, "uint16")


def check_uint8(arg_name: str, arg_value: Any) -> None:
    _check_ctype(arg_name, arg_value, "uint8")


def check_positive_or_set_default(arg_name: str, arg_value: Any, default: int = -1) -> int:
    """None -> `default`; otherwise an int64 that must be >= 0 (ValueError)."""
    if arg_value is None:
        return default
    check_int64(arg_name, arg_value)
    if arg_value < 0:
        raise ValueError(f"{arg_name}'s value:{arg_value} is invalid, should be >= 0")
    checked: int = arg_value
    return checked


def check_list_int32(arg_name: str, arg_value: Any) -> None:
    for item in arg_value:
        check_int32(arg_name, item)


def check_list_int64(arg_name: str, arg_value: Any) -> None:
    for item in arg_value:
        check_int64(arg_name, item)


def check_list_uint64(arg_name: str, arg_value: Any) -> None:
    for item in arg_value:
        check_uint64(arg_name, item)
