# SPDX-License-Identifier: Apache-2.0
"""Block lists cross into the core once: the binding converts a list, a tuple or a
one-dimensional integer numpy array in one pass and raises what _validation.check_int_list
raises for a bad one (the same type and message), before any core check.

Nothing is linked here, so a call whose arguments pass ends in LLM_NOT_YET_LINK; the core's
own range check (LLM_PARAM_INVALID naming the position and the value) shows which values the
conversion read. The bytes a converted list moves are checked in
tests/integration/test_pull_block_arrays.py.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import llm_datadist as ld
from llm_datadist import BlocksCacheKey, CacheDesc, DataType, LLMException, LLMStatusCode, Placement
from llm_datadist._validation import check_int_list

NOT_YET_LINK = LLMStatusCode.LLM_NOT_YET_LINK
PARAM_INVALID = LLMStatusCode.LLM_PARAM_INVALID


@pytest.fixture
def cm():
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 1)
    cfg = ld.LLMConfig()
    cfg.host_mem_pool_cfg = '{"memory_size": 1048576}'
    cfg.enable_cache_manager = True
    dd.init(cfg.generate_options())
    try:
        yield dd.cache_manager
    finally:
        dd.finalize()


@pytest.fixture
def dst(cm):
    return cm.allocate_blocks_cache(CacheDesc(1, [4, 1024], DataType.DT_UINT8, Placement.HOST))


def expected_error(values, name):
    """What check_int_list (the Python check this conversion replaces) raises for `values`."""
    with pytest.raises((TypeError, ValueError)) as info:
        check_int_list(values, name, "uint64")
    return info.type, str(info.value)


def code_of(call):
    with pytest.raises(LLMException) as info:
        call()
    return info.value.status_code, str(info.value)


KEY = BlocksCacheKey(7, 0)

ACCEPTED = [
    ([1], [2]),
    ((1, 2), (3, 0)),
    ([True], [False]),                                            # a bool is an int (isinstance)
    ([LLMStatusCode.LLM_SUCCESS % 4], [1]),                       # an int subclass
    (np.array([1, 2], dtype=np.uint64), np.array([3, 0], dtype=np.int64)),
    (np.array([1], dtype=np.int8), np.array([3], dtype=np.uint16)),
    (np.arange(8, dtype=np.int32)[1:8:3], np.arange(3, dtype=np.uint32)),  # a strided view: [1, 4, 7]
    (np.array([], dtype=np.int64)[:0].tolist() + [0], np.array([0], dtype=np.uint8)),
]


@pytest.mark.parametrize("src, dst_blocks", ACCEPTED)
def test_accepted_block_lists_reach_the_link_lookup(cm, dst, src, dst_blocks):
    status, message = code_of(lambda: cm.pull_blocks(KEY, dst, src, dst_blocks))
    assert status == NOT_YET_LINK, message


@pytest.mark.parametrize("dst_blocks, position, value", [
    ([0, 1, 9], 2, 9),
    ((3, 2**63), 1, 2**63),
    (np.array([0, 5], dtype=np.int16), 1, 5),
    (np.array([2**64 - 1], dtype=np.uint64), 0, 2**64 - 1),
    (np.arange(20, dtype=np.int64)[0:20:6], 1, 6),              # [0, 6, 12, 18]: the stride is honoured
])
def test_the_core_sees_the_values_converted(cm, dst, dst_blocks, position, value):
    src = list(range(len(dst_blocks)))
    status, message = code_of(lambda: cm.pull_blocks(KEY, dst, src, dst_blocks))
    assert status == PARAM_INVALID
    assert re.search(rf"dst_blocks\[{position}\] = {value} is out of range \[0, 4\)", message), message


BAD = [
    [1.0],
    [1, "2"],
    [np.int64(1)],              # a numpy integer is not an int (isinstance), as upstream checks
    [1, -3],
    [2**64],
    [-(2**70)],
    {1, 2},
    (i for i in [1]),
    range(1),
    None,
    3,
    b"\x01",
]


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize("name", ["src_blocks", "dst_blocks"])
def test_bad_block_lists_raise_what_check_int_list_raises(cm, dst, bad, name):
    kind, message = expected_error(bad, name)
    args = {"src_blocks": [0], "dst_blocks": [0], name: bad}
    with pytest.raises(kind) as info:
        cm.pull_blocks(KEY, dst, args["src_blocks"], args["dst_blocks"])
    assert type(info.value) is kind and str(info.value) == message
    # push_blocks: the same conversion, the same errors
    with pytest.raises(kind) as info:
        cm.push_blocks(KEY, dst, args["src_blocks"], args["dst_blocks"])
    assert type(info.value) is kind and str(info.value) == message


@pytest.mark.parametrize("array, message", [
    (np.array([-1], dtype=np.int64), "dst_blocks[0]'s value is out of range, -1 is not a uint64 value, "
                                     "valid range is [0, 18446744073709551615]."),
    (np.array([0, 1, -7], dtype=np.int8), "dst_blocks[2]'s value is out of range, -7 is not a uint64 value, "
                                          "valid range is [0, 18446744073709551615]."),
])
def test_negative_array_elements_are_value_errors(cm, dst, array, message):
    with pytest.raises(ValueError) as info:
        cm.pull_blocks(KEY, dst, [0] * len(array), array)
    assert str(info.value) == message


@pytest.mark.parametrize("array", [np.array([1.0]), np.array([[1]]), np.array([True]),
                                   np.array([1], dtype=">i8" if np.little_endian else "<i8")], ids=repr)
def test_arrays_that_are_not_one_dimensional_native_integers_are_type_errors(cm, dst, array):
    with pytest.raises(TypeError, match="dst_blocks as an array needs one dimension of native integers"):
        cm.pull_blocks(KEY, dst, [0], array)


def test_core_checks_keep_the_python_api_messages(cm, dst):
    contiguous = cm.allocate_cache(CacheDesc(1, [4, 1024], DataType.DT_UINT8, Placement.HOST))
    cases = [
        (lambda: cm.pull_blocks(KEY, contiguous, [0], [0]),
         f"pull_blocks needs a blocks cache, but dst_cache (cache_id {contiguous.cache_id}) is contiguous; "
         f"use pull_cache."),
        (lambda: cm.pull_blocks(KEY, dst, [], []), "dst_blocks must not be empty."),
        (lambda: cm.pull_blocks(KEY, dst, np.array([0, 1]), [0]),
         "src_blocks has 2 entries and dst_blocks 1; they must be equal."),
        (lambda: cm.push_blocks(KEY, contiguous, [0], [0]),
         f"push_blocks needs a blocks src_cache, but cache {contiguous.cache_id} is contiguous."),
        (lambda: cm.push_blocks(KEY, dst, [0], (0, 1)),
         "src_blocks (1) and dst_blocks (2) must be non-empty and of equal length."),
        (lambda: cm.pull_blocks(ld.CacheKey(7, 2**64 - 1), dst, [], [0]),
         f"CacheKey(cluster_id=7, req_id={2**64 - 1}, model_id=0, prefix_id={2**64 - 1}) must have exactly one "
         f"of req_id and prefix_id set."),
        (lambda: cm.pull_cache(ld.CacheKey(7, 1), contiguous, 4), "batch_index 4 is out of range [0, 4)."),
        (lambda: cm.pull_cache(ld.CacheKey(7, 1), contiguous, 0, 0), "size must be -1 or > 0, but got 0."),
        (lambda: cm.push_cache(ld.CacheKeyByIdAndIndex(7, 1), contiguous, 5),
         "src_batch_index 5 is out of range [0, 4)."),
    ]
    for call, message in cases:
        status, text = code_of(call)
        assert status == PARAM_INVALID and message in text, (message, text)
