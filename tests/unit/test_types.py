# SPDX-License-Identifier: Apache-2.0
"""The validation helpers, DataType, CacheDesc, the keys, Cache, the layer-wise transfer types
and CacheTask: accepted forms and the exact error kind (and code) for every bad input."""
from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from typing import Any, Iterator

import numpy as np
import pytest

from llm_datadist import _validation as v
from llm_datadist.data_type import (DataType, dtype_size, from_torch_dtype, to_numpy_dtype,
                                    to_torch_dtype)
from llm_datadist.llm_types import (INVALID_ID, BlocksCacheKey, Cache, CacheDesc, CacheKey,
                                    CacheKeyByIdAndIndex, CacheTask, LayerSynchronizer, MemInfo,
                                    Memtype, Placement, PushType, RegisterMemStatus,
                                    TransferConfig, TransferWithCacheKeyConfig, is_valid_id)
from llm_datadist.status import LLMException, LLMStatusCode

U64 = 2**64 - 1
S = LLMStatusCode


@contextlib.contextmanager
def param_invalid(*needles: Any) -> Iterator[Any]:
    """Expect LLMException(LLM_PARAM_INVALID) whose message names every needle."""
    with pytest.raises(LLMException) as info:
        yield info
    assert info.value.status_code == LLMStatusCode.LLM_PARAM_INVALID
    for needle in needles:
        assert str(needle) in str(info.value), (needle, str(info.value))


@contextlib.contextmanager
def value_error(*needles: Any) -> Iterator[Any]:
    with pytest.raises(ValueError) as info:
        yield info
    assert not isinstance(info.value, LLMException)
    for needle in needles:
        assert str(needle) in str(info.value), (needle, str(info.value))


@contextlib.contextmanager
def type_error(name: str) -> Iterator[Any]:
    with pytest.raises(TypeError) as info:
        yield info
    assert name in str(info.value) and "only support" in str(info.value), str(info.value)


# ---- _validation ------------------------------------------------------------------------------

def test_check_type_message_and_bool_rule():
    """Upstream: utils/utils.py check_isinstance (isinstance, so a bool passes for an int)."""
    assert v.check_type(3, "n", int) == 3
    assert v.check_type(None, "n", int, allow_none=True) is None
    with pytest.raises(TypeError) as info:
        v.check_type("3", "n", [int, list])
    assert str(info.value) == "n only support [int, list], but got str."
    assert v.check_type(True, "n", int) is True  # upstream's isinstance check: bool is an int
    with type_error("n"):
        v.check_type(None, "n", int)
    assert v.check_type(True, "flag", bool) is True
    assert v.check_type(True, "x", (int, bool)) is True


@pytest.mark.parametrize("ctype,low,high", [
    ("uint64", 0, 2**64 - 1), ("int64", -(2**63), 2**63 - 1), ("uint32", 0, 2**32 - 1),
    ("int32", -(2**31), 2**31 - 1), ("uint16", 0, 65535), ("uint8", 0, 255),
])
def test_check_int_ranges(ctype, low, high):
    assert v.INT_RANGES[ctype] == (low, high)
    assert v.check_int(low, "x", ctype) == low
    assert v.check_int(high, "x", ctype) == high
    for bad in (low - 1, high + 1):
        with value_error("x", bad, ctype, f"[{low}, {high}]"):
            v.check_int(bad, "x", ctype)
    assert v.check_int(False, "x", ctype) is False  # a bool is an int, as upstream's isinstance
    with type_error("x"):
        v.check_int(1.0, "x", ctype)
    with type_error("x"):
        v.check_int(np.int64(1), "x", ctype)
    assert v.check_int(None, "x", ctype, allow_none=True) is None


def test_check_int_list_and_dict():
    assert v.check_int_list([1, 2], "xs") == [1, 2]
    assert v.check_int_list((1,), "xs", "uint8") == (1,)
    assert v.check_int_list(None, "xs", allow_none=True) is None
    with type_error("xs"):
        v.check_int_list({1, 2}, "xs")
    with type_error("xs[1]"):
        v.check_int_list([1, "2"], "xs")
    with type_error("xs[0]"):
        v.check_int_list([1.5], "xs")
    with value_error("xs[2]", 256):
        v.check_int_list([0, 1, 256], "xs", "uint8")
    assert v.check_dict({"a": "b"}, "d", str, str) == {"a": "b"}
    with pytest.raises(TypeError, match="d dict key"):
        v.check_dict({1: "b"}, "d", str, str)
    with pytest.raises(TypeError, match="d dict value"):
        v.check_dict({"a": 1}, "d", str, str)
    with type_error("d"):
        v.check_dict([], "d", str, str)


def test_check_int_list_long_lists_name_the_offending_element():
    # Block lists run to thousands of ints and take a fast path; an error must still name the
    # first bad element, wherever it is, and the value.
    ids = list(range(5000))
    assert v.check_int_list(ids, "src_blocks", "uint64") is ids
    with value_error("src_blocks[4999]", -1):
        v.check_int_list(ids[:-1] + [-1], "src_blocks", "uint64")
    with value_error("src_blocks[3000]", 2**64):
        v.check_int_list(ids[:3000] + [2**64] + ids[3001:], "src_blocks", "uint64")
    with type_error("src_blocks[4000]"):
        v.check_int_list(ids[:4000] + [4000.0] + ids[4001:], "src_blocks", "uint64")
    with type_error("src_blocks[10]"):
        v.check_int_list(ids[:10] + [np.uint64(10)] + ids[11:], "src_blocks", "uint64")
    assert v.check_int_list([], "src_blocks", "uint64") == []


def test_check_range_and_param_invalid():
    assert v.check_range(range(0, 3), "r") == range(0, 3)
    assert v.check_range(None, "r", allow_none=True) is None
    with type_error("r"):
        v.check_range(None, "r")
    with type_error("r"):
        v.check_range([0, 1], "r")
    with param_invalid("r", "range(0, 4, 2)"):
        v.check_range(range(0, 4, 2), "r")
    with param_invalid("r", "range(-1, 2)"):
        v.check_range(range(-1, 2), "r")
    with param_invalid("r", "range(2, 2)"):
        v.check_range(range(2, 2), "r")
    with param_invalid("r", "range(3, 1)"):
        v.check_range(range(3, 1), "r")
    exc = v.param_invalid("bad thing 7", {"operation": "x"})
    assert isinstance(exc, LLMException) and exc.status_code == S.LLM_PARAM_INVALID
    assert exc.context == {"operation": "x"} and "bad thing 7" in str(exc)


# ---- DataType ---------------------------------------------------------------------------------

SIZES = {
    DataType.DT_FLOAT: 4, DataType.DT_FLOAT16: 2, DataType.DT_INT8: 1, DataType.DT_INT32: 4,
    DataType.DT_UINT8: 1, DataType.DT_INT16: 2, DataType.DT_UINT16: 2, DataType.DT_UINT32: 4,
    DataType.DT_INT64: 8, DataType.DT_UINT64: 8, DataType.DT_DOUBLE: 8, DataType.DT_BOOL: 1,
    DataType.DT_BF16: 2,
}


def test_data_type_members_and_values():
    assert {m.name: m.value for m in DataType} == {
        "DT_FLOAT": 0, "DT_FLOAT16": 1, "DT_INT8": 2, "DT_INT32": 3, "DT_UINT8": 4,
        "DT_INT16": 6, "DT_UINT16": 7, "DT_UINT32": 8, "DT_INT64": 9, "DT_UINT64": 10,
        "DT_DOUBLE": 11, "DT_BOOL": 12, "DT_STRING": 13, "DT_BF16": 27,
    }
    assert len(DataType) == 14
    assert str(DataType.DT_BF16) == "DataType.DT_BF16"
    assert DataType(27) is DataType.DT_BF16


@pytest.mark.parametrize("dt", list(SIZES))
def test_dtype_size_and_numpy(dt):
    assert dtype_size(dt) == SIZES[dt]
    np_dt = to_numpy_dtype(dt)
    assert np.dtype(np_dt).itemsize == SIZES[dt]


def test_numpy_mapping_specifics():
    assert to_numpy_dtype(DataType.DT_BF16) == np.uint16  # numpy has no bfloat16
    assert to_numpy_dtype(DataType.DT_BOOL) == np.bool_
    assert to_numpy_dtype(DataType.DT_DOUBLE) == np.float64
    assert to_numpy_dtype(DataType.DT_FLOAT16) == np.float16


def test_dt_string_has_no_size_or_element_type():
    for fn in (dtype_size, to_numpy_dtype, to_torch_dtype):
        with param_invalid("DT_STRING"):
            fn(DataType.DT_STRING)


def test_data_type_helpers_reject_non_datatype():
    for fn in (dtype_size, to_numpy_dtype, to_torch_dtype):
        with type_error("data_type"):
            fn(1)  # type: ignore[arg-type]


def test_torch_mapping():
    torch = pytest.importorskip("torch")
    expected = {
        DataType.DT_FLOAT: torch.float32, DataType.DT_FLOAT16: torch.float16,
        DataType.DT_BF16: torch.bfloat16, DataType.DT_BOOL: torch.bool,
        DataType.DT_INT8: torch.int8, DataType.DT_UINT8: torch.uint8,
        DataType.DT_INT16: torch.int16, DataType.DT_INT32: torch.int32,
        DataType.DT_INT64: torch.int64, DataType.DT_DOUBLE: torch.float64,
    }
    for dt, tdt in expected.items():
        assert to_torch_dtype(dt) == tdt
        assert from_torch_dtype(tdt) is dt
    for dt in SIZES:
        assert torch.empty(0, dtype=to_torch_dtype(dt)).element_size() == SIZES[dt]
    with param_invalid("complex64"):
        from_torch_dtype(torch.complex64)
    with type_error("torch_dtype"):
        from_torch_dtype("float32")


def test_deprecated_numpy_maps():
    import llm_datadist.data_type as dtmod

    assert dtmod.dtype_to_np_dtype[DataType.DT_BF16] is np.float16  # upstream's choice
    assert dtmod.np_dtype_to_dtype[np.dtype(np.int32)] is DataType.DT_INT32
    assert np.float32 in dtmod.valid_np_dtypes
    with pytest.raises(AttributeError):
        getattr(dtmod, "no_such_thing")


# ---- small enums and MemInfo ------------------------------------------------------------------

def test_enums():
    assert [(m.name, m.value) for m in Placement] == [("HOST", 0), ("DEVICE", 1)]
    assert str(Placement.DEVICE) == "Placement.DEVICE" and Placement.HOST == 0
    assert [(m.name, m.value) for m in RegisterMemStatus] == [
        ("OK", 0), ("PREPARING", 1), ("FAILED", 2)]
    assert [(m.name, m.value) for m in Memtype] == [("MEM_TYPE_DEVICE", 0), ("MEM_TYPE_HOST", 1)]
    assert [m.value for m in PushType] == [0, 1, 2]
    assert INVALID_ID == U64
    assert is_valid_id(0) and is_valid_id(U64 - 1)
    assert not is_valid_id(U64) and not is_valid_id(-1)


def test_mem_info():
    info = MemInfo(Memtype.MEM_TYPE_DEVICE, 4096, 1 << 20)
    assert (info.mem_type, info.addr, info.size) == (Memtype.MEM_TYPE_DEVICE, 4096, 1 << 20)
    assert "4096" in repr(info)
    with type_error("mem_type"):
        MemInfo(0, 1, 1)  # type: ignore[arg-type]
    with type_error("addr"):
        MemInfo(Memtype.MEM_TYPE_HOST, "1", 1)  # type: ignore[arg-type]
    with value_error("size", -1):
        MemInfo(Memtype.MEM_TYPE_HOST, 1, -1)


# ---- CacheDesc --------------------------------------------------------------------------------

def test_cache_desc_defaults_and_props():
    desc = CacheDesc(80, [4, 256], DataType.DT_FLOAT16)
    assert desc.num_tensors == 80
    assert desc.shape == [4, 256]
    assert desc.data_type is DataType.DT_FLOAT16
    assert desc.placement is Placement.DEVICE
    assert desc.batch_dim == 0 and desc.batch_size == 4
    assert desc.seq_len_dim_index == -1
    assert desc.kv_tensor_format is None
    assert desc._is_blocks is False
    assert desc.size == 4 * 256 * 2
    full = CacheDesc(2, (3, 5, 7), DataType.DT_INT8, Placement.HOST, 1, 2, "ND")
    assert full.shape == [3, 5, 7] and full.batch_size == 5 and full.batch_dim == 1
    assert full.seq_len_dim_index == 2 and full.kv_tensor_format == "ND"
    assert full.placement is Placement.HOST
    assert repr(full) == ("CacheDesc(num_tensors=2, shape=[3, 5, 7], data_type=DataType.DT_INT8, "
                          "placement=Placement.HOST, batch_dim_index=1, seq_len_dim_index=2, "
                          "kv_tensor_format='ND')")


@pytest.mark.parametrize("dt", list(SIZES))
def test_cache_desc_size_every_type(dt):
    assert CacheDesc(1, [2, 3, 4], dt).size == 24 * SIZES[dt]


def test_cache_desc_size_errors():
    with param_invalid("13"):
        CacheDesc(1, [2, 3], DataType.DT_STRING).size
    with param_invalid("-1"):
        CacheDesc(1, [2, -1], DataType.DT_FLOAT).size
    with param_invalid("overflow"):
        CacheDesc(1, [2**62, 2**62], DataType.DT_FLOAT).size
    assert CacheDesc(1, [0, 3], DataType.DT_FLOAT).size == 0


def test_cache_desc_update_dim_resets_size():
    desc = CacheDesc(2, [4, 16], DataType.DT_FLOAT)
    assert desc.size == 256
    desc.update_dim(1, 32)
    assert desc.shape == [4, 32] and desc.size == 512
    desc.update_dim(0, 8)
    assert desc.batch_size == 8 and desc.size == 1024
    with param_invalid("dim_index 2"):
        desc.update_dim(2, 1)
    with param_invalid("dim_index -1"):
        desc.update_dim(-1, 1)
    with type_error("dim_value"):
        desc.update_dim(0, "1")  # type: ignore[arg-type]
    with value_error("dim_value", 2**63):
        desc.update_dim(0, 2**63)
    # shape is a copy: mutating it does not change the desc
    desc.shape[0] = 99
    assert desc.shape[0] == 8


def test_cache_desc_type_and_range_errors():
    with type_error("num_tensors"):
        CacheDesc("2", [1], DataType.DT_FLOAT)
    with type_error("num_tensors"):
        CacheDesc(2.0, [1], DataType.DT_FLOAT)
    with value_error("num_tensors", -1):
        CacheDesc(-1, [1], DataType.DT_FLOAT)
    with value_error("num_tensors", 2**32):
        CacheDesc(2**32, [1], DataType.DT_FLOAT)
    for bad_shape in (4, "4,4", {4}, None):
        with type_error("shape"):
            CacheDesc(1, bad_shape, DataType.DT_FLOAT)
    with type_error("shape[1]"):
        CacheDesc(1, [4, "4"], DataType.DT_FLOAT)
    with type_error("shape[0]"):
        CacheDesc(1, [4.0], DataType.DT_FLOAT)
    with type_error("shape[0]"):
        CacheDesc(1, [None], DataType.DT_FLOAT)
    with value_error("shape[1]", 2**63):
        CacheDesc(1, [1, 2**63], DataType.DT_FLOAT)
    with type_error("data_type"):
        CacheDesc(1, [1], 0)
    with type_error("placement"):
        CacheDesc(1, [1], DataType.DT_FLOAT, 1)
    with type_error("batch_dim_index"):
        CacheDesc(1, [1], DataType.DT_FLOAT, Placement.HOST, "0")
    with type_error("seq_len_dim_index"):
        CacheDesc(1, [1], DataType.DT_FLOAT, Placement.HOST, 0, None)
    with value_error("seq_len_dim_index", 2**31):
        CacheDesc(1, [1], DataType.DT_FLOAT, Placement.HOST, 0, 2**31)
    with type_error("kv_tensor_format"):
        CacheDesc(1, [1], DataType.DT_FLOAT, Placement.HOST, 0, -1, 1)


@pytest.mark.parametrize("shape,batch_dim", [([4, 8], 2), ([4, 8], -1), ([4], 5), ([], 0)])
def test_cache_desc_batch_dim_out_of_range(shape, batch_dim):
    with param_invalid(f"batch_dim_index {batch_dim}", f"{len(shape)})"):
        CacheDesc(1, shape, DataType.DT_FLOAT, Placement.DEVICE, batch_dim)


@pytest.mark.parametrize("seq_dim", [-2, 2, 100])
def test_cache_desc_seq_len_dim_out_of_range(seq_dim):
    with param_invalid(f"seq_len_dim_index {seq_dim}"):
        CacheDesc(1, [4, 8], DataType.DT_FLOAT, Placement.DEVICE, 0, seq_dim)
    assert CacheDesc(1, [4, 8], DataType.DT_FLOAT, Placement.DEVICE, 0, 1).seq_len_dim_index == 1


def test_cache_desc_equality_and_clone():
    a = CacheDesc(2, [4, 8], DataType.DT_FLOAT16)
    b = CacheDesc(2, (4, 8), DataType.DT_FLOAT16, Placement.DEVICE, 1, 1, "ND")
    assert a == b  # equality is on (num_tensors, shape, data_type, placement)
    assert a != CacheDesc(3, [4, 8], DataType.DT_FLOAT16)
    assert a != CacheDesc(2, [4, 9], DataType.DT_FLOAT16)
    assert a != CacheDesc(2, [4, 8], DataType.DT_BF16)
    assert a != CacheDesc(2, [4, 8], DataType.DT_FLOAT16, Placement.HOST)
    assert a != "CacheDesc"
    with pytest.raises(TypeError):
        hash(a)
    a._is_blocks = True
    c = a._clone()
    assert c == a and c is not a and c._is_blocks
    c.update_dim(0, 1)
    assert a.shape == [4, 8]


# ---- keys -------------------------------------------------------------------------------------

def test_cache_key_forms():
    key = CacheKey(1, 2)
    assert (key.cluster_id, key.prompt_cluster_id, key.req_id, key.model_id, key.prefix_id) == (
        1, 1, 2, 0, U64)
    assert CacheKey(1, 2, 3).model_id == 3
    k4 = CacheKey(1, 2, 3, 4)
    assert (k4.model_id, k4.prefix_id) == (3, 4)
    assert CacheKey(prompt_cluster_id=1, req_id=2) == key
    assert CacheKey(cluster_id=1, req_id=2) == key
    assert CacheKey(1, req_id=2, prefix_id=9).prefix_id == 9
    assert CacheKey(req_id=2, cluster_id=1, model_id=5).model_id == 5
    assert CacheKey(U64, U64, U64, U64).req_id == U64
    assert repr(CacheKey(prompt_cluster_id=1, req_id=2)) == (
        f"CacheKey(prompt_cluster_id=1, req_id=2, model_id=0, prefix_id={U64})")
    assert repr(k4) == "CacheKey(cluster_id=1, req_id=2, model_id=3, prefix_id=4)"
    assert key._pack() == (1, -1, 0, 2, U64, 0, False)


def test_cache_key_eq_hash():
    assert CacheKey(1, 2) == CacheKey(1, 2, 0, U64)
    assert hash(CacheKey(1, 2)) == hash(CacheKey(prompt_cluster_id=1, req_id=2))
    assert len({CacheKey(1, 2), CacheKey(1, 2), CacheKey(1, 3)}) == 2
    assert CacheKey(1, 2) != CacheKey(1, 2, 1)
    assert CacheKey(1, 0) != BlocksCacheKey(1, 0)
    assert CacheKey(1, 2) != (1, 2)


def test_cache_key_param_errors():
    with param_invalid("at most 4", "5"):
        CacheKey(1, 2, 3, 4, 5)
    with param_invalid("at most 4", "5"):
        CacheKey(1, 2, 3, 4, cluster_id=1)
    with param_invalid("cluster_id is required"):
        CacheKey()
    with param_invalid("cluster_id is required"):
        CacheKey(req_id=1)
    with param_invalid("req_id is required"):
        CacheKey(1)
    with param_invalid("req_id is required"):
        CacheKey(cluster_id=1, model_id=2)
    with param_invalid("'request_id'"):
        CacheKey(1, 2, request_id=3)
    with param_invalid("'batch_index'"):
        CacheKey(cluster_id=1, req_id=2, batch_index=0)
    with param_invalid("prompt_cluster_id", "cluster_id"):
        CacheKey(prompt_cluster_id=1, cluster_id=1, req_id=2)
    with param_invalid("'cluster_id'"):
        CacheKey(1, 2, cluster_id=1)
    with param_invalid("'prompt_cluster_id'"):
        CacheKey(1, 2, prompt_cluster_id=1)
    with param_invalid("'req_id'"):
        CacheKey(1, 2, req_id=2)


@pytest.mark.parametrize("field,index", [("cluster_id", 0), ("req_id", 1), ("model_id", 2),
                                         ("prefix_id", 3)])
def test_cache_key_value_errors(field, index):
    args = [1, 2, 0, U64]
    for bad in (-1, 2**64):
        bad_args = list(args)
        bad_args[index] = bad
        with value_error(field, bad, "uint64"):
            CacheKey(*bad_args)
    for bad in ("1", 1.0, None):
        bad_args = list(args)
        bad_args[index] = bad
        with type_error(field):
            CacheKey(*bad_args)
    with value_error("prompt_cluster_id" if field == "cluster_id" else field, -1):
        kwargs = {"prompt_cluster_id": 1, "req_id": 2}
        kwargs["prompt_cluster_id" if field == "cluster_id" else field] = -1
        CacheKey(**kwargs)


def test_cache_key_by_id_and_index():
    key = CacheKeyByIdAndIndex(1, 2)
    assert (key.cluster_id, key.cache_id, key.batch_index) == (1, 2, 0)
    assert CacheKeyByIdAndIndex(cluster_id=U64, cache_id=-1, batch_index=2**32 - 1).cache_id == -1
    assert CacheKeyByIdAndIndex(1, 2, 3) == CacheKeyByIdAndIndex(1, 2, 3)
    assert hash(CacheKeyByIdAndIndex(1, 2, 3)) == hash(CacheKeyByIdAndIndex(1, 2, 3))
    assert CacheKeyByIdAndIndex(1, 2, 3) != CacheKeyByIdAndIndex(1, 2, 4)
    assert CacheKeyByIdAndIndex(1, 0) != BlocksCacheKey(1, 0)
    assert repr(key) == "CacheKeyByIdAndIndex(cluster_id=1, cache_id=2, batch_index=0)"
    assert key._pack() == (1, 2, 0, U64, U64, 0, False)
    with value_error("cluster_id", -1, "uint64"):
        CacheKeyByIdAndIndex(-1, 1)
    with value_error("cluster_id", 2**64):
        CacheKeyByIdAndIndex(2**64, 1)
    with value_error("cache_id", 2**63, "int64"):
        CacheKeyByIdAndIndex(1, 2**63)
    with value_error("cache_id", -(2**63) - 1):
        CacheKeyByIdAndIndex(1, -(2**63) - 1)
    with value_error("batch_index", 2**32, "uint32"):
        CacheKeyByIdAndIndex(1, 1, 2**32)
    with value_error("batch_index", -1):
        CacheKeyByIdAndIndex(1, 1, -1)
    with type_error("cluster_id"):
        CacheKeyByIdAndIndex("1", 1)
    with type_error("cache_id"):
        CacheKeyByIdAndIndex(1, None)
    with type_error("batch_index"):
        CacheKeyByIdAndIndex(1, 1, 0.0)
    with pytest.raises(TypeError):
        CacheKeyByIdAndIndex(1)  # type: ignore[call-arg]


def test_blocks_cache_key():
    key = BlocksCacheKey(3)
    assert (key.cluster_id, key.prompt_cluster_id, key.model_id) == (3, 3, 0)
    assert BlocksCacheKey(3, 1).model_id == 1
    assert BlocksCacheKey(prompt_cluster_id=3, model_id=2) == BlocksCacheKey(cluster_id=3,
                                                                             model_id=2)
    assert BlocksCacheKey(3, model_id=2) == BlocksCacheKey(3, 2)
    assert hash(BlocksCacheKey(3, 2)) == hash(BlocksCacheKey(prompt_cluster_id=3, model_id=2))
    assert BlocksCacheKey(3, 1) != BlocksCacheKey(3, 2)
    assert repr(BlocksCacheKey(cluster_id=3)) == "BlocksCacheKey(cluster_id=3, model_id=0)"
    assert repr(BlocksCacheKey(prompt_cluster_id=3)) == (
        "BlocksCacheKey(prompt_cluster_id=3, model_id=0)")
    assert key._pack() == (3, -1, 0, U64, U64, 0, True)
    with param_invalid("at most 2", "3"):
        BlocksCacheKey(1, 2, 3)
    with param_invalid("at most 2", "3"):
        BlocksCacheKey(1, 2, model_id=3)
    with param_invalid("cluster_id is required"):
        BlocksCacheKey()
    with param_invalid("cluster_id is required"):
        BlocksCacheKey(model_id=1)
    with param_invalid("'req_id'"):
        BlocksCacheKey(1, req_id=2)
    with param_invalid("multiple values", "'cluster_id'"):
        BlocksCacheKey(2, cluster_id=1)
    with param_invalid("prompt_cluster_id", "cluster_id"):
        BlocksCacheKey(prompt_cluster_id=1, cluster_id=1)
    with value_error("cluster_id", -1):
        BlocksCacheKey(-1)
    with value_error("model_id", 2**64):
        BlocksCacheKey(1, 2**64)
    with type_error("cluster_id"):
        BlocksCacheKey("1")
    with type_error("prompt_cluster_id"):
        BlocksCacheKey(prompt_cluster_id=1.0)
    with type_error("model_id"):
        BlocksCacheKey(1, None)


# ---- Cache ------------------------------------------------------------------------------------

def test_cache_props_and_invalidate():
    desc = CacheDesc(2, [4, 8], DataType.DT_FLOAT)
    cache = Cache(1, desc, [4096, 8192])
    assert cache.cache_id == 1 and cache.cache_desc is desc
    assert cache.tensor_addrs == [4096, 8192]
    assert cache.is_blocks_cache is False and cache.is_registered is False
    reg = Cache(5, desc, (1, 2), cache_manager=object(), is_registered=True, is_blocks_cache=True)
    assert reg.is_registered and reg.is_blocks_cache and reg.tensor_addrs == [1, 2]
    cache._invalidate()
    assert cache.tensor_addrs == []
    assert "cache_id=1" in repr(cache)
    with value_error("cache_id", 2**63):
        Cache(2**63, desc, [1, 2])
    with type_error("cache_desc"):
        Cache(1, "desc", [1, 2])  # type: ignore[arg-type]
    with type_error("tensor_addrs[1]"):
        Cache(1, desc, [1, "2"])


def test_create_cpu_cache():
    desc = CacheDesc(2, [4, 8], DataType.DT_FLOAT, Placement.HOST)
    addrs = [0x1000, 0x2000]
    cache = Cache.create_cpu_cache(desc, addrs)
    assert isinstance(cache, Cache)
    assert cache.cache_id == -1 and cache.is_blocks_cache and not cache.is_registered
    assert cache.tensor_addrs == addrs and cache.cache_desc is desc
    assert Cache.create_cpu_cache(desc, (1, 2)).tensor_addrs == [1, 2]


def test_create_cpu_cache_errors():
    host = CacheDesc(2, [4, 8], DataType.DT_FLOAT, Placement.HOST)
    device = CacheDesc(2, [4, 8], DataType.DT_FLOAT, Placement.DEVICE)
    with param_invalid("Placement.HOST", "Placement.DEVICE"):
        Cache.create_cpu_cache(device, [1, 2])
    with param_invalid("num_tensors:2", "addrs num:3"):
        Cache.create_cpu_cache(host, [1, 2, 3])
    with param_invalid("num_tensors:2", "addrs num:0"):
        Cache.create_cpu_cache(host, [])
    with type_error("cache_desc"):
        Cache.create_cpu_cache(None, [1, 2])  # type: ignore[arg-type]
    with type_error("addrs"):
        Cache.create_cpu_cache(host, 1)  # type: ignore[arg-type]
    with type_error("addrs[0]"):
        Cache.create_cpu_cache(host, ["1", 2])
    with value_error("addrs[1]", -5):
        Cache.create_cpu_cache(host, [1, -5])


# ---- layer-wise transfer types ----------------------------------------------------------------

def test_layer_synchronizer_is_abstract():
    with pytest.raises(TypeError):
        LayerSynchronizer()  # type: ignore[abstract]

    class Ready(LayerSynchronizer):
        def synchronize_layer(self, layer_index, timeout_in_millis):
            return layer_index >= 0

    assert Ready().synchronize_layer(3, None) is True


def test_transfer_config():
    cfg = TransferConfig(7, [1, 2, 3, 4])
    assert (cfg.dst_cluster_id, cfg.dst_addrs, cfg.src_layer_range, cfg.src_batch_index) == (
        7, [1, 2, 3, 4], None, 0)
    assert cfg.dst_layer_range is None
    cfg2 = TransferConfig(7, (1, 2), range(3, 4), 2)
    assert cfg2.src_layer_range == range(3, 4) and cfg2.src_batch_index == 2
    cfg.src_layer_range = range(0, 2)
    cfg.src_batch_index = 1
    cfg.dst_cluster_id = 8
    cfg.dst_addrs = [5, 6]
    assert (cfg.dst_cluster_id, cfg.dst_addrs, cfg.src_layer_range, cfg.src_batch_index) == (
        8, [5, 6], range(0, 2), 1)
    assert "dst_cluster_id=8" in repr(cfg)
    with value_error("dst_cluster_id", -1):
        TransferConfig(-1, [1])
    with type_error("dst_addrs"):
        TransferConfig(1, None)
    with type_error("dst_addrs[0]"):
        TransferConfig(1, ["1"])
    with value_error("dst_addrs[0]", 2**64):
        TransferConfig(1, [2**64])
    with type_error("src_layer_range"):
        TransferConfig(1, [1], [0, 1])
    with param_invalid("src_layer_range", "range(0, 4, 2)"):
        TransferConfig(1, [1], range(0, 4, 2))
    with param_invalid("src_layer_range", "range(1, 1)"):
        TransferConfig(1, [1], range(1, 1))
    with value_error("src_batch_index", 2**32):
        TransferConfig(1, [1], None, 2**32)
    with param_invalid("range(-1, 1)"):
        cfg.src_layer_range = range(-1, 1)
    with value_error("src_batch_index", -1):
        cfg.src_batch_index = -1


@pytest.mark.parametrize("key", [BlocksCacheKey(2, 1), CacheKeyByIdAndIndex(2, 5, 1)])
def test_transfer_with_cache_key_config(key):
    cfg = TransferWithCacheKeyConfig(key, range(0, 2), range(4, 6))
    assert cfg.cache_key is key and cfg.dst_cluster_id == 2
    assert cfg.src_layer_range == range(0, 2) and cfg.dst_layer_range == range(4, 6)
    assert cfg.src_batch_index == 0
    assert "range(4, 6)" in repr(cfg)
    cfg.src_layer_range = range(1, 3)
    cfg.dst_layer_range = range(0, 2)
    assert (cfg.src_layer_range, cfg.dst_layer_range) == (range(1, 3), range(0, 2))
    # Plain attributes after construction (upstream): lengths are checked by transfer_cache_async.
    cfg.src_layer_range = range(0, 3)
    cfg.dst_layer_range = None
    assert (cfg.src_layer_range, cfg.dst_layer_range) == (range(0, 3), None)
    with type_error("dst_layer_range"):
        cfg.dst_layer_range = (0, 1)


def test_transfer_with_cache_key_config_errors():
    bkey, ikey = BlocksCacheKey(2), CacheKeyByIdAndIndex(2, 1)
    for bad_key in (CacheKey(1, 2), None, 2):
        with type_error("cache_key"):
            TransferWithCacheKeyConfig(bad_key, range(0, 1), range(0, 1))
    with type_error("src_layer_range"):
        TransferWithCacheKeyConfig(ikey)
    with type_error("src_layer_range"):
        TransferWithCacheKeyConfig(ikey, None, range(0, 1))
    with type_error("dst_layer_range"):
        TransferWithCacheKeyConfig(ikey, range(0, 1), None)
    with type_error("dst_layer_range"):
        TransferWithCacheKeyConfig(ikey, range(0, 1), (0, 1))
    with param_invalid("src_layer_range", "range(0, 4, 2)"):
        TransferWithCacheKeyConfig(ikey, range(0, 4, 2), range(0, 2))
    with param_invalid("dst_layer_range", "range(-2, 0)"):
        TransferWithCacheKeyConfig(ikey, range(0, 2), range(-2, 0))
    with param_invalid("src_layer_range", "range(3, 3)"):
        TransferWithCacheKeyConfig(ikey, range(3, 3), range(0, 1))
    with param_invalid("dst_layer_range", "range(2, 1)"):
        TransferWithCacheKeyConfig(ikey, range(0, 1), range(2, 1))
    # Equal lengths are required (with different starts too).
    with param_invalid("range(0, 2)", "range(5, 8)"):
        TransferWithCacheKeyConfig(ikey, range(0, 2), range(5, 8))
    with param_invalid("range(2, 4)", "range(0, 4)"):
        TransferWithCacheKeyConfig(ikey, range(2, 4), range(0, 4))
    with param_invalid("BlocksCacheKey", "1"):
        TransferWithCacheKeyConfig(bkey, range(0, 1), range(0, 1), 1)
    assert TransferWithCacheKeyConfig(ikey, range(0, 1), range(0, 1), 3).src_batch_index == 3
    with value_error("src_batch_index", 2**32):
        TransferWithCacheKeyConfig(ikey, range(0, 1), range(0, 1), 2**32)
    with type_error("src_batch_index"):
        TransferWithCacheKeyConfig(ikey, range(0, 1), range(0, 1), "0")
    cfg = TransferWithCacheKeyConfig(ikey, range(0, 1), range(0, 1), 3)
    cfg.src_batch_index = 0
    cfg.cache_key = bkey  # upstream's cache_key setter checks only the type
    assert cfg.cache_key is bkey
    with param_invalid("BlocksCacheKey", "2"):
        cfg.src_batch_index = 2
    with type_error("cache_key"):
        cfg.cache_key = CacheKey(1, 1)


# ---- CacheTask --------------------------------------------------------------------------------

def done(result: Any = None, exc: BaseException = None) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
    return fut


def test_cache_task_all_success():
    task = CacheTask([done(S.LLM_SUCCESS), done(0)])
    assert task.synchronize() is S.LLM_SUCCESS
    assert task.get_results() == [S.LLM_SUCCESS, S.LLM_SUCCESS]
    assert all(isinstance(r, LLMStatusCode) for r in task.get_results(0))
    assert task.synchronize(0) is S.LLM_SUCCESS


def test_cache_task_first_failure_in_config_order():
    task = CacheTask([done(S.LLM_SUCCESS), done(S.LLM_NOT_YET_LINK), done(S.LLM_TIMEOUT)])
    assert task.synchronize() is S.LLM_NOT_YET_LINK
    assert task.get_results() == [S.LLM_SUCCESS, S.LLM_NOT_YET_LINK, S.LLM_TIMEOUT]


def test_cache_task_none_means_never_sent():
    task = CacheTask([done(S.LLM_PARAM_INVALID), done(None)])
    assert task.get_results() == [S.LLM_PARAM_INVALID, None]
    assert task.synchronize() is S.LLM_PARAM_INVALID
    only_unsent = CacheTask([done(S.LLM_SUCCESS), done(None)])
    assert only_unsent.synchronize() is S.LLM_SUCCESS
    assert only_unsent.get_results() == [S.LLM_SUCCESS, None]


def test_cache_task_exceptions_and_cancellation():
    err = LLMException("boom", status_code=S.LLM_LINK_FAILED)
    task = CacheTask([done(exc=err), done(exc=OSError("x"))])
    assert task.get_results() == [S.LLM_LINK_FAILED, S.LLM_FAILED]
    assert task.synchronize() is S.LLM_LINK_FAILED
    cancelled: concurrent.futures.Future = concurrent.futures.Future()
    assert cancelled.cancel()
    assert CacheTask([cancelled]).get_results() == [S.LLM_FAILED]
    # An unknown native code maps to LLM_FAILED like code_2_status.
    assert CacheTask([done(12345)]).get_results() == [S.LLM_FAILED]


def test_cache_task_timeout_then_completion():
    pending: concurrent.futures.Future = concurrent.futures.Future()
    task = CacheTask([done(S.LLM_SUCCESS), pending])
    assert task.synchronize(10) is S.LLM_TIMEOUT
    assert task.get_results(0) == [S.LLM_TIMEOUT, S.LLM_TIMEOUT]
    assert "done=1" in repr(task)
    timer = threading.Timer(0.05, pending.set_result, args=(S.LLM_SUCCESS,))
    timer.start()
    try:
        assert task.synchronize() is S.LLM_SUCCESS  # None waits until finished
    finally:
        timer.join()
    assert task.get_results(0) == [S.LLM_SUCCESS, S.LLM_SUCCESS]


def test_cache_task_errors_and_empty():
    assert CacheTask([]).synchronize() is S.LLM_SUCCESS
    assert CacheTask(()).get_results() == []
    task = CacheTask([done(0)])
    with value_error("timeout_in_millis", -1):
        task.synchronize(-1)
    with value_error("timeout_in_millis", 2**32):
        task.get_results(2**32)
    with type_error("timeout_in_millis"):
        task.synchronize(1.5)
    with type_error("futures"):
        CacheTask(done(0))  # type: ignore[arg-type]
    with type_error("futures[1]"):
        CacheTask([done(0), 0])
