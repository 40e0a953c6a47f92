# SPDX-License-Identifier: Apache-2.0
"""`DataType`: upstream's 14 element types, valued with their ge::DataType numbers, plus the
element sizes and the numpy/torch equivalents that zero-copy views need.

The numbers are the ones the native core and the wire use (csrc/include/llm_datadist/types.h),
so `data_type.value` can be handed to `_core` as is.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Dict, Tuple

from ._validation import check_type, param_invalid

__all__ = ["DataType", "dtype_size", "to_numpy_dtype", "to_torch_dtype", "from_torch_dtype"]


class DataType(Enum):
    """Element type of a cache tensor (values are ge::DataType codes, as upstream)."""

    DT_FLOAT = 0
    DT_FLOAT16 = 1
    DT_INT8 = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 6
    DT_UINT16 = 7
    DT_UINT32 = 8
    DT_INT64 = 9
    DT_UINT64 = 10
    DT_DOUBLE = 11
    DT_BOOL = 12
    DT_STRING = 13
    DT_BF16 = 27


# One row per type with a fixed element size: (bytes, numpy name, torch name). numpy has no
# bfloat16, so DT_BF16 appears there as its raw 16-bit pattern (same size, bit-exact copies).
# numpy and torch are resolved lazily, so importing this module needs neither. The byte sizes
# agree with the core's DataTypeSize (csrc/common/types.cc); test_types checks both.
_ELEMENT_TYPES: Dict[DataType, Tuple[int, str, str]] = {
    DataType.DT_FLOAT: (4, "float32", "float32"),
    DataType.DT_FLOAT16: (2, "float16", "float16"),
    DataType.DT_INT8: (1, "int8", "int8"),
    DataType.DT_INT32: (4, "int32", "int32"),
    DataType.DT_UINT8: (1, "uint8", "uint8"),
    DataType.DT_INT16: (2, "int16", "int16"),
    DataType.DT_UINT16: (2, "uint16", "uint16"),
    DataType.DT_UINT32: (4, "uint32", "uint32"),
    DataType.DT_INT64: (8, "int64", "int64"),
    DataType.DT_UINT64: (8, "uint64", "uint64"),
    DataType.DT_DOUBLE: (8, "float64", "float64"),
    DataType.DT_BOOL: (1, "bool_", "bool"),
    DataType.DT_BF16: (2, "uint16", "bfloat16"),
}
_SIZES: Dict[DataType, int] = {dt: row[0] for dt, row in _ELEMENT_TYPES.items()}
_NUMPY_NAMES: Dict[DataType, str] = {dt: row[1] for dt, row in _ELEMENT_TYPES.items()}
_TORCH_NAMES: Dict[DataType, str] = {dt: row[2] for dt, row in _ELEMENT_TYPES.items()}


def _no_element_type(dt: DataType, what: str) -> Exception:
    return param_invalid(f"data_type {dt} has no {what}; DT_STRING cannot back a cache tensor.")


def dtype_size(dt: DataType) -> int:
    """Bytes per element of `dt`. LLMException LLM_PARAM_INVALID for DT_STRING (no fixed size)."""
    check_type(dt, "data_type", DataType)
    size = _SIZES.get(dt)
    if size is None:
        raise _no_element_type(dt, "fixed element size")
    return size


def to_numpy_dtype(dt: DataType) -> Any:
    """The numpy dtype for `dt`'s elements.

    DT_BF16 maps to ``numpy.uint16``: numpy has no bfloat16, and a uint16 view keeps the bits
    exact (convert with torch, or ``(a.astype(np.uint32) << 16).view(np.float32)``). Upstream's
    deprecated `dtype_to_np_dtype` maps it to float16 instead, which reinterprets the bits.
    DT_STRING -> LLMException LLM_PARAM_INVALID.
    """
    check_type(dt, "data_type", DataType)
    name = _NUMPY_NAMES.get(dt)
    if name is None:
        raise _no_element_type(dt, "numpy element type")
    import numpy as np

    return np.dtype(getattr(np, name))


def to_torch_dtype(dt: DataType) -> Any:
    """The torch dtype for `dt` (DT_BF16 -> torch.bfloat16, DT_BOOL -> torch.bool, ...).

    torch is imported here, on first use, never when llm_datadist is imported. DT_UINT16/32/64
    need a torch that has those dtypes (2.3+). DT_STRING -> LLMException LLM_PARAM_INVALID.
    """
    check_type(dt, "data_type", DataType)
    name = _TORCH_NAMES.get(dt)
    if name is None:
        raise _no_element_type(dt, "torch element type")
    import torch

    result = getattr(torch, name, None)
    if result is None:
        raise param_invalid(f"data_type {dt} needs torch.{name}, which torch "
                            f"{getattr(torch, '__version__', '?')} does not have.")
    return result


def from_torch_dtype(torch_dtype: Any) -> DataType:
    """The DataType of a torch dtype (e.g. to describe a torch tensor being registered).
    LLMException LLM_PARAM_INVALID for a torch dtype with no DataType (complex, float8, ...)."""
    import torch

    check_type(torch_dtype, "torch_dtype", torch.dtype)
    for dt, name in _TORCH_NAMES.items():
        if getattr(torch, name, None) == torch_dtype:
            return dt
    raise param_invalid(f"torch dtype {torch_dtype} has no llm_datadist DataType.")


def __getattr__(name: str) -> Any:
    """Upstream's deprecated module attributes, built on first access (they need numpy):
    `dtype_to_np_dtype` (DT_BF16 -> float16 as upstream), `np_dtype_to_dtype`,
    `valid_np_dtypes`."""
    if name in ("dtype_to_np_dtype", "np_dtype_to_dtype", "valid_np_dtypes"):
        import numpy as np

        forward = {dt: getattr(np, n) for dt, n in _NUMPY_NAMES.items()}
        forward[DataType.DT_BF16] = np.float16
        forward[DataType.DT_STRING] = np.bytes_
        if name == "dtype_to_np_dtype":
            return forward
        if name == "valid_np_dtypes":
            return list(forward.values())
        return {np.dtype(t): dt for dt, t in forward.items() if dt is not DataType.DT_BF16}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
