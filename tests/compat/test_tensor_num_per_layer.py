# SPDX-License-Identifier: Apache-2.0
"""tensor_num_per_layer and layer ranges as upstream has them (issue 11, item 1): a cache with
fewer tensors than the default 2 per layer (one-layer MLA caches, single-tensor aux caches,
upstream's own 1-tensor samples) moves whole with default arguments, through every one of
pull_cache, pull_blocks, push_cache and push_blocks, between real processes, every byte checked."""
from __future__ import annotations

import pytest

from workers import (PREFILL_ID, block_copies, blocks_key, desc, expect_code, id_key, req_key,
                     slot_copies)

pytestmark = pytest.mark.timeout(90)

P = PREFILL_ID


def mla(num_tensors=1, batch=4):
    """An MLA-style contiguous cache: one tensor per layer, 4 slots of 8 KiB."""
    return desc(num_tensors, [batch, 64, 64], "DT_BF16", "DEVICE")


def mla_blocks(num_tensors=1, num_blocks=8):
    return desc(num_tensors, [num_blocks, 16, 1, 128], "DT_BF16", "DEVICE")


def test_one_tensor_cache_with_default_arguments(linked_pair):
    """Upstream: src/python/llm_datadist/llm_datadist/v2/cache_manager.py (pull_blocks, pull_cache:
    only tensor_num_per_layer > 0 is required; with no layer range every tensor moves)."""
    p, d = linked_pair.prefill, linked_pair.decode
    src = p.allocate(mla(), keys=[req_key(P, 1)])
    p.fill(src, 3)
    dst = d.allocate(mla())
    d.fill(dst, 4)
    d.ok(d.pull_cache(req_key(P, 1), dst, batch_index=2))
    copies = slot_copies(src, 3, 0, dst, 2)
    d.verify(dst, 4, copies, "pull_cache of a 1-tensor cache")

    src_b = p.allocate_blocks(mla_blocks(), blocks_key(P, 7))
    p.fill(src_b, 5)
    dst_b = d.allocate_blocks(mla_blocks())
    d.fill(dst_b, 6)
    d.ok(d.pull_blocks(blocks_key(P, 7), dst_b, [0, 5, 7], [3, 1, 6]))
    d.verify(dst_b, 6, block_copies(src_b, 5, [0, 5, 7], dst_b, [3, 1, 6]), "pull_blocks of a 1-tensor cache")

    # Push back slots and blocks the pulls did not write, so they hold the decode's own pattern.
    d.ok(d.push_cache(id_key(P, src.cache_id, 3), dst, src_batch_index=0))
    p.verify(src, 3, slot_copies(dst, 4, 0, src, 3), "push_cache of a 1-tensor cache")
    d.ok(d.push_blocks(blocks_key(P, 7), dst_b, [0, 2], [2, 4]))
    p.verify(src_b, 5, block_copies(dst_b, 6, [0, 2], src_b, [2, 4]), "push_blocks of a 1-tensor cache")


def test_layer_range_touching_a_shorter_last_group(linked_pair):
    """Upstream: src/llm_datadist/api/llm_datadist_impl.cc GetCacheMaxLayer (the last, shorter
    group of tensors counts as a layer). 3 tensors, 2 per layer: layer 1 is tensor 2 alone."""
    p, d = linked_pair.prefill, linked_pair.decode
    src = p.allocate(mla(num_tensors=3), keys=[req_key(P, 2)])
    p.fill(src, 7)
    dst = d.allocate(mla(num_tensors=3))
    d.fill(dst, 8)
    d.ok(d.pull_cache(req_key(P, 2), dst, batch_index=1, src_layer_range=range(1, 2), dst_layer_range=range(1, 2)))
    copies = slot_copies(src, 7, 0, dst, 1, src_layer_range=range(1, 2), dst_layer_range=range(1, 2))
    d.verify(dst, 8, copies, "layer 1 = tensor 2")
    # Layer 2 does not exist: the core names the range and the cache's layers.
    expect_code(d.pull_cache(req_key(P, 2), dst, batch_index=0, src_layer_range=range(2, 3),
                             dst_layer_range=range(2, 3)),
                "LLM_PARAM_INVALID", match=r"dst_layer_range \[2, 3\) is out of range: .* has 2 layer")
    d.verify(dst, 8, copies, "a refused pull leaves the destination as it was")
    # No range: all three tensors, whatever tensor_num_per_layer says.
    d.ok(d.push_cache(id_key(P, src.cache_id, 2), dst, src_batch_index=3, tensor_num_per_layer=2))
    p.verify(src, 7, slot_copies(dst, 8, 3, src, 2), "a push without ranges moves every tensor")


def test_tensor_num_per_layer_zero_is_refused_by_the_core(linked_pair):
    """Upstream: src/llm_datadist/api/llm_datadist_impl.cc CheckKvCacheExtParam (tensor_num_per_layer
    need > 0) -> LLM_PARAM_INVALID; a value beyond uint32 is a ValueError (check_uint32)."""
    p, d = linked_pair.prefill, linked_pair.decode
    src = p.allocate(mla(), keys=[req_key(P, 3)])
    dst = d.allocate(mla())
    expect_code(d.pull_cache(req_key(P, 3), dst, tensor_num_per_layer=0), "LLM_PARAM_INVALID",
                match="tensor_num_per_layer must be > 0, but got 0")
    expect_code(d.pull_cache(req_key(P, 3), dst, tensor_num_per_layer=2**32), "ValueError",
                match="tensor_num_per_layer")
