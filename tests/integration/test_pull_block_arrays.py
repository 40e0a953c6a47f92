# SPDX-License-Identifier: Apache-2.0
"""Block lists given as numpy arrays (any integer dtype, strided views) and tuples move the
blocks they name, between a real prefill and a real decode process, every byte checked: the
binding reads them in one pass (tests/unit/test_block_indices.py has the errors)."""
from __future__ import annotations

import pytest

from workers import PREFILL_ID, block_copies, blocks_key, desc

pytestmark = pytest.mark.timeout(60)

P = PREFILL_ID


def paged(num_blocks=16):
    return desc(4, [num_blocks, 16, 2, 64], "DT_BF16", "DEVICE")   # 4 tensors x 16 blocks of 4 KiB


def test_pull_and_push_blocks_take_arrays_and_tuples(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(paged(), blocks_key(P, 40))
    p.fill(src, 41)
    dst = d.allocate_blocks(paged())
    d.fill(dst, 42)
    # (the worker's exec namespace: ld, np, cm, caches by cache id)
    d.exec(f"key = ld.BlocksCacheKey({P}, 40)\n"
           f"c = caches[{dst.cache_id}]\n"
           "cm.pull_blocks(key, c, np.array([3, 7, 8], dtype=np.uint64), np.array([0, 1, 2], dtype=np.int64))\n"
           "cm.pull_blocks(key, c, (9, 15), np.arange(20, dtype=np.int32)[10:14:3])\n"       # dst [10, 13]
           "cm.pull_blocks(key, c, np.array([4], dtype=np.uint16), np.array([5], dtype=np.uint8))\n")
    copies = block_copies(src, 41, [3, 7, 8, 9, 15, 4], dst, [0, 1, 2, 10, 13, 5])
    d.verify(dst, 42, copies, "blocks named by arrays and tuples")
    p.verify(src, 41)
