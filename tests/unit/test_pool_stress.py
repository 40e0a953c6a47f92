# SPDX-License-Identifier: Apache-2.0
"""Pool accounting under load: random mixed-size allocate/free through the public API ends fully
coalesced, and 10k allocate/deallocate cycles leak nothing (pool accounting and RSS)."""
import random

import pytest

import llm_datadist as ld
from config_helpers import make_config
from llm_datadist import CacheDesc, CacheKey, DataType, LLMException, LLMStatusCode, Placement


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.fixture
def small_page_dd():
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    dd.init(make_config(pool_bytes=256 << 20, page_shift=12).generate_options())
    yield dd
    dd.finalize()


def test_random_mixed_sizes_end_fully_coalesced(small_page_dd):
    cm = small_page_dd.cache_manager
    rng = random.Random(7)
    live = []
    calls = 0
    while calls < 20000:
        calls += 1
        if live and rng.random() < 0.45:
            cm.deallocate_blocks_cache(live.pop(rng.randrange(len(live))))
            continue
        num_blocks = rng.choice([1, 3, 16, 64, 257])
        placement = rng.choice([Placement.HOST, Placement.DEVICE])
        try:
            live.append(cm.allocate_blocks_cache(CacheDesc(rng.randint(1, 4), [num_blocks, rng.randint(1, 4096)],
                                                           DataType.DT_UINT8, placement)))
        except LLMException as exc:
            assert exc.status_code == LLMStatusCode.LLM_OUT_OF_MEMORY
    for cache in live:
        cm.deallocate_blocks_cache(cache)
    for placement in (Placement.HOST, Placement.DEVICE):
        stats = cm.pool_stats(placement)
        assert stats["used_bytes"] == 0 and stats["allocation_count"] == 0
        assert stats["free_range_count"] == 1 and stats["largest_free_range"] == stats["capacity"]


def test_ten_thousand_cycles_leak_nothing(small_page_dd):
    cm = small_page_dd.cache_manager
    desc = CacheDesc(4, [4, 64, 128], DataType.DT_FLOAT16, Placement.DEVICE)

    def cycle(i):
        cache = cm.allocate_cache(desc, [CacheKey(1, i), CacheKey(1, 2**64 - 1, prefix_id=i)])
        cache.numpy(0)[0, 0, 0] = 1.0  # touch the memory through a view, then drop the view
        cm.remove_cache_key(CacheKey(1, i))
        cm.deallocate_cache(cache)
        cm.remove_cache_key(CacheKey(1, 2**64 - 1, prefix_id=i))

    for i in range(500):  # warm up allocator caches and Python internals
        cycle(i)
    rss_before = rss_bytes()
    for i in range(500, 10500):
        cycle(i)
    growth = rss_bytes() - rss_before
    stats = cm.pool_stats(Placement.DEVICE)
    assert stats["used_bytes"] == 0 and stats["allocation_count"] == 0 and stats["free_range_count"] == 1
    engine = small_page_dd._engine
    assert engine.cache_count() == 0 and engine.key_count() == 0
    assert growth < 4 << 20, f"RSS grew by {growth} bytes over 10k cycles"
