# SPDX-License-Identifier: Apache-2.0
"""Every local cache operation, with every byte checked, and every bad input with its exact
exception and code. Runs on the CPU device (Placement.DEVICE backed by host memory)."""
import ctypes

import numpy as np
import pytest

import llm_datadist as ld
from llm_datadist import (BlocksCacheKey, Cache, CacheDesc, CacheKey, DataType, LLMException, LLMStatusCode,
                          Placement)

U64MAX = 2**64 - 1
PARAM_INVALID = LLMStatusCode.LLM_PARAM_INVALID


def raises_code(code, match=None):
    """pytest.raises for LLMException that also checks the status code."""
    class _Ctx:
        def __enter__(self):
            self._cm = pytest.raises(LLMException, match=match)
            self.info = self._cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self._cm.__exit__(*exc)
            assert self.info.value.status_code == code, self.info.value
            return suppressed
    return _Ctx()


def same(a, b):
    """Byte equality (random bytes include NaN patterns, which compare unequal as floats)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def fill(cache, seed):
    rng = np.random.default_rng(seed)
    arrays = cache.numpy()
    for arr in arrays:
        arr.view(np.uint8)[...] = rng.integers(0, 256, size=arr.nbytes, dtype=np.uint8).reshape(arr.view(np.uint8).shape)
    return [arr.copy() for arr in arrays]


def contiguous(placement=Placement.DEVICE, batch=4, num_tensors=4, dt=DataType.DT_FLOAT16, tail=(16, 32)):
    return CacheDesc(num_tensors, [batch, *tail], dt, placement)


def blocks(placement=Placement.DEVICE, num_blocks=16, num_tensors=4, block=(16, 2, 8)):
    return CacheDesc(num_tensors, [num_blocks, *block], DataType.DT_BF16, placement)


# ---- allocate / keys / deallocate ---------------------------------------------------------------

def test_allocate_binds_keys_and_ids_start_at_one(cache_manager):
    cache = cache_manager.allocate_cache(contiguous(), [CacheKey(1, 10), CacheKey(1, U64MAX), CacheKey(1, 12)])
    assert cache.cache_id == 1 and len(cache.tensor_addrs) == 4 and not cache.is_blocks_cache
    assert all(a != 0 for a in cache.tensor_addrs) and len(set(cache.tensor_addrs)) == 4
    second = cache_manager.allocate_cache(contiguous(), [CacheKey(1, 11)])
    assert second.cache_id == 2
    # the padding slot bound nothing: req 10 and 12 are still taken, U64MAX can be reused
    cache_manager.allocate_cache(contiguous(), [CacheKey(1, U64MAX)])
    with raises_code(PARAM_INVALID, match="req_id=12"):
        cache_manager.allocate_cache(contiguous(), [CacheKey(1, 12)])


def test_duplicate_key_in_one_call_and_prefix_namespace(cache_manager):
    with raises_code(PARAM_INVALID, match="appears twice"):
        cache_manager.allocate_cache(contiguous(), [CacheKey(1, 5), CacheKey(1, 5)])
    # same id in the prefix namespace is a different key; same req id with another model id too
    cache_manager.allocate_cache(contiguous(), [CacheKey(1, 5), CacheKey(1, U64MAX, prefix_id=5),
                                                CacheKey(1, 5, model_id=1)])
    with raises_code(PARAM_INVALID, match="prefix_id=5"):
        cache_manager.allocate_cache(contiguous(), [CacheKey(1, U64MAX, prefix_id=5)])
    stats = cache_manager.pool_stats(Placement.DEVICE)
    assert stats["allocation_count"] == 4  # the failed calls allocated nothing


def test_too_many_keys_for_batch(cache_manager):
    with raises_code(PARAM_INVALID, match="5 cache keys given for a batch of 4"):
        cache_manager.allocate_cache(contiguous(batch=4), [CacheKey(1, i) for i in range(5)])


def test_reference_counting_frees_after_dealloc_and_last_key(cache_manager):
    used0 = cache_manager.pool_stats(Placement.DEVICE)["used_bytes"]
    cache = cache_manager.allocate_cache(contiguous(), [CacheKey(1, 1), CacheKey(1, U64MAX, prefix_id=2)])
    used1 = cache_manager.pool_stats(Placement.DEVICE)["used_bytes"]
    assert used1 > used0
    cache_manager.deallocate_cache(cache)
    assert cache.tensor_addrs == []
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] == used1  # keys still hold it
    cache_manager.remove_cache_key(CacheKey(1, 1))
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] == used1  # the prefix key still does
    cache_manager.remove_cache_key(CacheKey(1, U64MAX, prefix_id=2))
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] == used0
    # the keys are free again
    again = cache_manager.allocate_cache(contiguous(), [CacheKey(1, 1)])
    assert again.cache_id > cache.cache_id


def test_remove_key_first_then_deallocate(cache_manager):
    cache = cache_manager.allocate_cache(contiguous(), [CacheKey(1, 3)])
    cache_manager.remove_cache_key(CacheKey(1, 3))
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] > 0  # id reference holds it
    cache_manager.deallocate_cache(cache)
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] == 0


def test_unknown_key_and_double_deallocate_are_noops_that_lose_nothing(cache_manager):
    keep = cache_manager.allocate_cache(contiguous(), [CacheKey(1, 9)])
    data = fill(keep, 1)
    cache_manager.remove_cache_key(CacheKey(1, 12345))  # unknown key: no-op, as upstream
    gone = cache_manager.allocate_cache(contiguous())
    cache_manager.deallocate_cache(gone)
    used = cache_manager.pool_stats(Placement.DEVICE)["used_bytes"]
    cache_manager.deallocate_cache(gone)  # double deallocate: no-op (upstream), frees nothing else
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] == used
    assert all(same(a, b) for a, b in zip(keep.numpy(), data))


def test_blocks_cache_key_and_immediate_free(cache_manager):
    cache = cache_manager.allocate_blocks_cache(blocks(), BlocksCacheKey(1, 0))
    assert cache.is_blocks_cache
    with raises_code(PARAM_INVALID, match="model_id=0"):
        cache_manager.allocate_blocks_cache(blocks(), BlocksCacheKey(1, 0))
    other = cache_manager.allocate_blocks_cache(blocks(), BlocksCacheKey(1, 1))
    cache_manager.deallocate_blocks_cache(cache)
    cache_manager.allocate_blocks_cache(blocks(), BlocksCacheKey(1, 0))  # key released with it
    cache_manager.deallocate_blocks_cache(other)


def test_blocks_vs_contiguous_misuse(cache_manager):
    contig = cache_manager.allocate_cache(contiguous())
    paged = cache_manager.allocate_blocks_cache(blocks())
    with raises_code(PARAM_INVALID, match="deallocate_blocks_cache"):
        cache_manager.deallocate_cache(paged)
    with raises_code(PARAM_INVALID, match="deallocate_cache"):
        cache_manager.deallocate_blocks_cache(contig)
    with raises_code(PARAM_INVALID, match="copy_blocks"):
        cache_manager.copy_cache(contig, paged)
    with raises_code(PARAM_INVALID, match="copy_cache"):
        cache_manager.copy_blocks(contig, {0: [1]})


def test_num_tensors_zero_and_no_pool():
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 3)
    from config_helpers import make_config
    dd.init(make_config(host_pool=False).generate_options())
    try:
        cm = dd.cache_manager
        with raises_code(PARAM_INVALID, match="num_tensors"):
            cm.allocate_cache(CacheDesc(0, [4, 8], DataType.DT_FLOAT, Placement.DEVICE))
        with raises_code(PARAM_INVALID, match="host_mem_pool_cfg"):
            cm.allocate_cache(CacheDesc(2, [4, 8], DataType.DT_FLOAT, Placement.HOST))
        with raises_code(PARAM_INVALID, match="host_mem_pool_cfg"):
            cm.allocate_blocks_cache(CacheDesc(2, [4, 8], DataType.DT_FLOAT, Placement.HOST))
    finally:
        dd.finalize()


def test_out_of_memory_then_recovers(cache_manager):
    big = CacheDesc(1, [1, 40 << 20], DataType.DT_UINT8, Placement.DEVICE)
    first = cache_manager.allocate_cache(big)
    with raises_code(LLMStatusCode.LLM_OUT_OF_MEMORY, match="cannot fit") as info:
        cache_manager.allocate_cache(big)
    assert info.value.action == "free_memory" and info.value.recoverable
    before = cache_manager.pool_stats(Placement.DEVICE)
    with raises_code(LLMStatusCode.LLM_OUT_OF_MEMORY):  # fails on its 2nd tensor: 1st is returned
        cache_manager.allocate_cache(CacheDesc(2, [1, 20 << 20], DataType.DT_UINT8, Placement.DEVICE))
    assert cache_manager.pool_stats(Placement.DEVICE) == before
    cache_manager.deallocate_cache(first)
    cache_manager.allocate_cache(big)


def test_wrong_types(cache_manager):
    with pytest.raises(TypeError):
        cache_manager.allocate_cache("desc")
    with pytest.raises(TypeError):
        cache_manager.allocate_cache(contiguous(), [1, 2])
    with pytest.raises(TypeError):
        cache_manager.allocate_cache(contiguous(), CacheKey(1, 1))
    with pytest.raises(TypeError):
        cache_manager.allocate_blocks_cache(blocks(), CacheKey(1, 1))
    with pytest.raises(TypeError):
        cache_manager.deallocate_cache(7)
    with pytest.raises(TypeError):
        cache_manager.remove_cache_key(BlocksCacheKey(1, 0))
    cache = cache_manager.allocate_cache(contiguous())
    with pytest.raises(TypeError):
        cache_manager.copy_cache(cache, cache, dst_batch_index="0")
    with pytest.raises(TypeError):
        cache_manager.copy_cache(cache, cache, size=1.5)
    with pytest.raises(TypeError):
        cache_manager.copy_blocks(cache, [0, 1])
    with pytest.raises(TypeError):
        cache_manager.swap_blocks(cache, cache, {0: "1"})
    with pytest.raises(TypeError):
        cache_manager.unregister_cache("1")


def test_out_of_range_integers(cache_manager):
    cache = cache_manager.allocate_cache(contiguous())
    with pytest.raises(ValueError):
        cache_manager.copy_cache(cache, cache, dst_batch_index=-1)
    with pytest.raises(ValueError):
        cache_manager.copy_cache(cache, cache, src_batch_index=2**32)
    with pytest.raises(ValueError):
        cache_manager.copy_cache(cache, cache, offset=-1)
    with pytest.raises(ValueError):
        cache_manager.unregister_cache(2**63)
    with pytest.raises(ValueError):
        CacheKey(1, 2**64)


# ---- copy_cache ---------------------------------------------------------------------------------

@pytest.mark.parametrize("placements", [(Placement.DEVICE, Placement.DEVICE), (Placement.HOST, Placement.DEVICE),
                                        (Placement.DEVICE, Placement.HOST), (Placement.HOST, Placement.HOST)])
def test_copy_cache_every_byte(cache_manager, placements):
    src = cache_manager.allocate_cache(contiguous(placements[0]))
    dst = cache_manager.allocate_cache(contiguous(placements[1]))
    src_data = fill(src, 2)
    dst_data = fill(dst, 3)
    cache_manager.copy_cache(dst, src, dst_batch_index=3, src_batch_index=1)
    for got, s, d in zip(dst.numpy(), src_data, dst_data):
        expect = d.copy()
        expect[3] = s[1]
        assert same(got, expect)  # slot 3 replaced, every other byte untouched


def test_copy_cache_offset_and_size(cache_manager):
    src = cache_manager.allocate_cache(contiguous())
    dst = cache_manager.allocate_cache(contiguous())
    src_data = fill(src, 4)
    dst_data = fill(dst, 5)
    slot = src.cache_desc.size // src.cache_desc.shape[0]
    cache_manager.copy_cache(dst, src, 0, 2, offset=100, size=50)
    for got, s, d in zip(dst.numpy(), src_data, dst_data):
        expect = d.view(np.uint8).reshape(4, slot).copy()
        expect[0, 100:150] = s.view(np.uint8).reshape(4, slot)[2, 100:150]
        assert same(got.view(np.uint8).reshape(4, slot), expect)
    cache_manager.copy_cache(dst, src, 1, 1, offset=slot - 8)  # size -1: to the slot's end
    for got, s in zip(dst.numpy(), src_data):
        assert same(got.view(np.uint8).reshape(4, slot)[1, -8:], s.view(np.uint8).reshape(4, slot)[1, -8:])


def test_copy_cache_bad_inputs(cache_manager):
    src = cache_manager.allocate_cache(contiguous(batch=4))
    dst = cache_manager.allocate_cache(contiguous(batch=2))
    slot = src.cache_desc.size // 4
    with raises_code(PARAM_INVALID, match="dst_batch_index 2 is out of range"):
        cache_manager.copy_cache(dst, src, dst_batch_index=2)
    with raises_code(PARAM_INVALID, match="src_batch_index 4 is out of range"):
        cache_manager.copy_cache(dst, src, src_batch_index=4)
    with raises_code(PARAM_INVALID, match="larger than a batch slot"):
        cache_manager.copy_cache(dst, src, size=slot + 1)
    with raises_code(PARAM_INVALID, match="larger than a batch slot"):
        cache_manager.copy_cache(dst, src, offset=10, size=slot - 9)
    with raises_code(PARAM_INVALID, match="offset"):
        cache_manager.copy_cache(dst, src, offset=slot)
    with raises_code(PARAM_INVALID, match="size must be -1 or > 0"):
        cache_manager.copy_cache(dst, src, size=0)
    with raises_code(PARAM_INVALID, match="size must be -1 or > 0"):
        cache_manager.copy_cache(dst, src, size=-2)
    other = cache_manager.allocate_cache(contiguous(num_tensors=2))
    with raises_code(PARAM_INVALID, match="num_tensors differ"):
        cache_manager.copy_cache(other, src)
    wide = cache_manager.allocate_cache(contiguous(tail=(16, 64)))
    with raises_code(PARAM_INVALID, match="batch slot bytes differ"):
        cache_manager.copy_cache(wide, src)
    cache_manager.deallocate_cache(dst)
    with raises_code(LLMStatusCode.LLM_KV_CACHE_NOT_EXIST, match=f"dst cache {dst.cache_id} does not exist"):
        cache_manager.copy_cache(dst, src)


# ---- copy_blocks / swap_blocks -------------------------------------------------------------------

def test_copy_blocks_every_byte(cache_manager):
    cache = cache_manager.allocate_blocks_cache(blocks())
    before = fill(cache, 6)
    cache_manager.copy_blocks(cache, {0: [5, 6], 3: [15]})
    for got, b in zip(cache.numpy(), before):
        expect = b.copy()
        expect[5] = expect[6] = b[0]
        expect[15] = b[3]
        assert same(got, expect)


def test_copy_blocks_index_out_of_range(cache_manager):
    cache = cache_manager.allocate_blocks_cache(blocks(num_blocks=16))
    data = fill(cache, 7)
    with raises_code(PARAM_INVALID, match="dst block index 16 is out of range"):
        cache_manager.copy_blocks(cache, {0: [1, 16]})
    with raises_code(PARAM_INVALID, match="src block index 99 is out of range"):
        cache_manager.copy_blocks(cache, {99: [1]})
    assert all(same(a, b) for a, b in zip(cache.numpy(), data))  # nothing moved


@pytest.mark.parametrize("direction", ["out", "in"])
def test_swap_blocks_every_byte(cache_manager, direction):
    dev = cache_manager.allocate_blocks_cache(blocks(Placement.DEVICE, num_blocks=16))
    host = cache_manager.allocate_blocks_cache(blocks(Placement.HOST, num_blocks=8))
    dev_data, host_data = fill(dev, 8), fill(host, 9)
    if direction == "out":
        mapping = {0: 7, 9: 0, 15: 3}
        cache_manager.swap_blocks(dev, host, mapping)
        for got, d, h in zip(host.numpy(), dev_data, host_data):
            expect = h.copy()
            for s, t in mapping.items():
                expect[t] = d[s]
            assert same(got, expect)
    else:
        mapping = {7: 0, 0: 15}
        cache_manager.swap_blocks(host, dev, mapping)
        for got, d, h in zip(dev.numpy(), dev_data, host_data):
            expect = d.copy()
            for s, t in mapping.items():
                expect[t] = h[s]
            assert same(got, expect)


def test_swap_blocks_with_create_cpu_cache(cache_manager):
    dev = cache_manager.allocate_blocks_cache(blocks(Placement.DEVICE, num_blocks=4, num_tensors=2))
    dev_data = fill(dev, 10)
    host_desc = blocks(Placement.HOST, num_blocks=4, num_tensors=2)
    buffers = [np.zeros(host_desc.size, dtype=np.uint8) for _ in range(2)]
    cpu = Cache.create_cpu_cache(host_desc, [b.ctypes.data for b in buffers])
    cache_manager.swap_blocks(dev, cpu, {0: 3, 1: 2, 2: 1, 3: 0})
    for buf, d in zip(buffers, dev_data):
        assert same(buf.reshape(4, -1), d.view(np.uint8).reshape(4, -1)[::-1])
    buffers[0][:] = 0x5A
    cache_manager.swap_blocks(cpu, dev, {1: 1})
    assert (dev.numpy()[0][1].view(np.uint8) == 0x5A).all()
    assert same(dev.numpy()[0][0], dev_data[0][0])


def test_swap_blocks_bad_inputs(cache_manager):
    dev = cache_manager.allocate_blocks_cache(blocks(Placement.DEVICE, num_blocks=4))
    dev2 = cache_manager.allocate_blocks_cache(blocks(Placement.DEVICE, num_blocks=4))
    host = cache_manager.allocate_blocks_cache(blocks(Placement.HOST, num_blocks=4))
    with raises_code(PARAM_INVALID, match="one HOST and one DEVICE"):
        cache_manager.swap_blocks(dev, dev2, {0: 0})
    with raises_code(PARAM_INVALID, match="dst block index 4 is out of range"):
        cache_manager.swap_blocks(dev, host, {0: 4})
    with raises_code(PARAM_INVALID, match="src block index 9 is out of range"):
        cache_manager.swap_blocks(dev, host, {9: 0})
    small = cache_manager.allocate_blocks_cache(CacheDesc(4, [4, 8], DataType.DT_BF16, Placement.HOST))
    with raises_code(PARAM_INVALID, match="block bytes differ"):
        cache_manager.swap_blocks(dev, small, {0: 0})
    contig = cache_manager.allocate_cache(contiguous(Placement.HOST))
    with raises_code(PARAM_INVALID, match="blocks caches"):
        cache_manager.swap_blocks(dev, contig, {0: 0})


def test_pull_arguments_are_checked_before_the_link_is_looked_up(cache_manager):
    # Each call below would reach LLM_NOT_YET_LINK (nothing is linked) if its arguments passed,
    # so every expected error here proves the argument check ran first, fast paths included.
    dst = cache_manager.allocate_blocks_cache(blocks(Placement.HOST, num_blocks=4, num_tensors=4))
    key = BlocksCacheKey(7, 0)
    with raises_code(LLMStatusCode.LLM_NOT_YET_LINK):
        cache_manager.pull_blocks(key, dst, [1], [2])
    with pytest.raises(TypeError, match=r"src_blocks\[0\]"):
        cache_manager.pull_blocks(key, dst, [1.0], [2])
    with pytest.raises(ValueError, match=r"dst_blocks\[1\].*-3"):
        cache_manager.pull_blocks(key, dst, [1, 2], [2, -3])
    with pytest.raises(TypeError, match="tensor_num_per_layer"):
        cache_manager.pull_blocks(key, dst, [1], [2], tensor_num_per_layer=1.0)
    with pytest.raises(ValueError, match="tensor_num_per_layer"):
        cache_manager.pull_blocks(key, dst, [1], [2], tensor_num_per_layer=-1)
    with raises_code(PARAM_INVALID, match=r"tensor_num_per_layer must be > 0, but got 0"):
        cache_manager.pull_blocks(key, dst, [1], [2], tensor_num_per_layer=0)
    with raises_code(PARAM_INVALID, match=r"dst_layer_range \[0, 5\) is out of range: local cache \d+ has 4 layer"):
        cache_manager.pull_blocks(key, dst, [1], [2], dst_layer_range=range(0, 5), tensor_num_per_layer=1)
    with raises_code(PARAM_INVALID, match=r"src_layer_range \[0, 1\) has 1 layer\(s\) and dst_layer_range 2"):
        cache_manager.pull_blocks(key, dst, [1], [2], src_layer_range=range(0, 1), dst_layer_range=range(0, 2),
                                  tensor_num_per_layer=1)
    with raises_code(PARAM_INVALID, match=r"dst_layer_range must have step 1"):
        cache_manager.pull_blocks(key, dst, [1], [2], dst_layer_range=range(0, 4, 2))
    with pytest.raises(TypeError, match="src_cache_key"):
        cache_manager.pull_blocks((7, 0), dst, [1], [2])
    # Upstream accepts these (cache_manager.py pull_blocks): any tensor_num_per_layer > 0 without a
    # range, a bool for an int, and keyword arguments it does not know.
    for accepted in ({"tensor_num_per_layer": 4}, {"tensor_num_per_layer": 5}, {"tensor_num_per_layer": True},
                     {"layer_range": range(0, 1)}, {"dst_layer_range": range(2, 2)}):
        with raises_code(LLMStatusCode.LLM_NOT_YET_LINK):
            cache_manager.pull_blocks(key, dst, [1], [2], **accepted)


# ---- registered memory ---------------------------------------------------------------------------

def test_register_cache_uses_user_memory_and_never_frees_it(cache_manager):
    desc = contiguous(Placement.HOST, num_tensors=2)
    buffers = [np.arange(desc.size, dtype=np.uint64).astype(np.uint8) for _ in range(2)]
    reg = cache_manager.register_cache(desc, [b.ctypes.data for b in buffers], [CacheKey(1, 77)])
    assert reg.is_registered and reg.tensor_addrs == [b.ctypes.data for b in buffers]
    cache_manager.deallocate_cache(reg)  # no-op for registered memory
    cache_manager.remove_cache_key(CacheKey(1, 77))  # no effect on registered caches
    with raises_code(PARAM_INVALID, match="req_id=77"):
        cache_manager.allocate_cache(contiguous(), [CacheKey(1, 77)])
    dst = cache_manager.allocate_cache(contiguous(Placement.HOST, num_tensors=2))
    cache_manager.copy_cache(dst, reg, 0, 3)
    slot = desc.size // 4
    for got, b in zip(dst.numpy(), buffers):
        assert same(got.view(np.uint8).reshape(4, slot)[0], b.reshape(4, slot)[3])
    with raises_code(PARAM_INVALID, match="was allocated, not registered"):
        cache_manager.unregister_cache(dst.cache_id)
    cache_manager.unregister_cache(reg.cache_id)
    cache_manager.unregister_cache(reg.cache_id)  # unknown id: no-op
    cache_manager.allocate_cache(contiguous(), [CacheKey(1, 77)])  # key released by unregister
    assert (buffers[0] == np.arange(desc.size, dtype=np.uint64).astype(np.uint8)).all()


def test_register_blocks_cache_and_bad_addresses(cache_manager):
    desc = blocks(Placement.HOST, num_blocks=4, num_tensors=2)
    buffers = [np.zeros(desc.size, dtype=np.uint8) for _ in range(2)]
    reg = cache_manager.register_blocks_cache(desc, [b.ctypes.data for b in buffers], BlocksCacheKey(1, 3))
    assert reg.is_blocks_cache and reg.is_registered
    buffers[1][:desc.size // 4] = 7
    cache_manager.copy_blocks(reg, {0: [2]})
    assert (buffers[1].reshape(4, -1)[2] == 7).all()
    with raises_code(PARAM_INVALID, match="addrs has 1 addresses"):
        cache_manager.register_cache(desc, [buffers[0].ctypes.data])
    with raises_code(PARAM_INVALID, match=r"addrs\[1\] is 0"):
        cache_manager.register_cache(desc, [buffers[0].ctypes.data, 0])
    with pytest.raises(TypeError):
        cache_manager.register_cache(desc, [buffers[0].ctypes.data, "x"])
    with pytest.raises(ValueError):
        cache_manager.register_cache(desc, [buffers[0].ctypes.data, -1])


# ---- views ---------------------------------------------------------------------------------------

def test_numpy_views_are_zero_copy_and_typed(cache_manager):
    cache = cache_manager.allocate_cache(CacheDesc(2, [4, 8], DataType.DT_FLOAT, Placement.DEVICE))
    views = cache.numpy()
    assert [v.shape for v in views] == [(4, 8), (4, 8)] and views[0].dtype == np.float32
    assert views[1].ctypes.data == cache.tensor_addrs[1]
    views[1][2, 3] = 1.5
    assert cache.numpy(1)[2, 3] == 1.5
    bf16 = cache_manager.allocate_blocks_cache(CacheDesc(1, [2, 4], DataType.DT_BF16, Placement.HOST))
    assert bf16.numpy(0).dtype == np.uint16  # numpy has no bfloat16: bit patterns


def test_view_keeps_memory_valid_after_deallocate(cache_manager):
    cache = cache_manager.allocate_cache(CacheDesc(1, [1, 1 << 20], DataType.DT_UINT8, Placement.DEVICE))
    view = cache.numpy(0)
    view[...] = 0xAB
    used = cache_manager.pool_stats(Placement.DEVICE)["used_bytes"]
    cache_manager.deallocate_cache(cache)
    # the view pins the memory: not returned to the pool, and not reused by the next allocation
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] == used
    other = cache_manager.allocate_cache(CacheDesc(1, [1, 1 << 20], DataType.DT_UINT8, Placement.DEVICE))
    other.numpy(0)[...] = 0
    assert (view == 0xAB).all()
    del view
    assert cache_manager.pool_stats(Placement.DEVICE)["used_bytes"] == used


def test_torch_views(cache_manager):
    torch = pytest.importorskip("torch")
    cache = cache_manager.allocate_blocks_cache(CacheDesc(2, [4, 16, 8], DataType.DT_BF16, Placement.DEVICE))
    tensors = cache.torch()
    assert tensors[0].dtype == torch.bfloat16 and tuple(tensors[0].shape) == (4, 16, 8)
    assert tensors[0].data_ptr() == cache.tensor_addrs[0]
    tensors[1].fill_(2.5)
    assert (cache.numpy(1) == np.array(2.5, dtype=np.float32).view(np.uint32) >> 16).all()
    half = cache_manager.allocate_cache(CacheDesc(1, [2, 2], DataType.DT_FLOAT16, Placement.HOST))
    half.torch(0).copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float16))
    assert half.numpy(0).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_view_bad_inputs(cache_manager):
    cache = cache_manager.allocate_cache(contiguous(num_tensors=2))
    with raises_code(PARAM_INVALID, match="tensor_index 2 is out of range"):
        cache.numpy(2)
    with pytest.raises(ValueError):
        cache.numpy(-1)
    cache_manager.deallocate_cache(cache)
    with raises_code(LLMStatusCode.LLM_KV_CACHE_NOT_EXIST, match=f"cache {cache.cache_id} does not exist"):
        cache.numpy(0)
    cpu = Cache.create_cpu_cache(CacheDesc(1, [2, 2], DataType.DT_FLOAT, Placement.HOST), [1234])
    with raises_code(PARAM_INVALID, match="create_cpu_cache"):
        cpu.numpy()


def test_transfers_to_an_unlinked_cluster_are_not_yet_link(cache_manager):
    cache = cache_manager.allocate_blocks_cache(blocks())
    contig = cache_manager.allocate_cache(contiguous())
    for call in (lambda: cache_manager.pull_cache(CacheKey(2, 1), contig),
                 lambda: cache_manager.pull_blocks(BlocksCacheKey(2, 0), cache, [0], [0]),
                 lambda: cache_manager.push_blocks(BlocksCacheKey(2, 0), cache, [0], [0]),
                 lambda: cache_manager.push_cache(ld.CacheKeyByIdAndIndex(2, 1, 0), contig)):
        with raises_code(LLMStatusCode.LLM_NOT_YET_LINK, match="cluster 2 is not linked"):
            call()
    with raises_code(PARAM_INVALID, match="which is this cluster"):  # pulling from oneself
        cache_manager.pull_blocks(BlocksCacheKey(1, 0), cache, [0], [0])


def test_core_refuses_remote_layers_whose_tensor_index_would_wrap(cache_manager):
    """The core owns the layer checks for every caller, not only the checked Python side: a
    remote layer 2**62 x 4 tensors per layer wraps 64 bits to tensor 0 unless divided first."""
    dst = cache_manager.allocate_cache(contiguous(Placement.HOST, num_tensors=4))
    try:
        with raises_code(PARAM_INVALID, match=r"src_layer_range \[4611686018427387904, .* is beyond any cache"):
            # push, key (cluster, key kind 1 (CacheKeyByIdAndIndex), req, prefix, model, remote
            # cache, remote slot), local cache, blocks_api, local slot, size, remote blocks, local
            # blocks, remote layers [2**62, 2**62 + 1), local layers [0, 1), 4 tensors per layer
            cache_manager._engine.transfer(False, (7, 1, U64MAX, U64MAX, 0, 1, 0), dst.cache_id, False, 0, -1, [], [],
                                           2**62, 2**62 + 1, 0, 1, 4)
    finally:
        cache_manager.deallocate_cache(dst)


def test_engine_transfer_refuses_bad_arguments_as_pybind11_would(cache_manager):
    """Engine.transfer is bound without pybind11's dispatcher (the per-request path): its
    arguments are still converted as pybind11 converts them, a TypeError naming the argument for
    a wrong type or an int outside its C++ type, and a core refusal is still an LLMException."""
    dst = cache_manager.allocate_cache(contiguous(Placement.HOST))
    engine, key = cache_manager._engine, (7, 1, U64MAX, U64MAX, 0, 1, 0)
    rest = [dst.cache_id, False, 0, -1, [], [], -1, -1, -1, -1, 2]
    try:
        with pytest.raises(TypeError, match="takes 13 to 15 positional arguments, but got 12"):
            engine.transfer(False, key, *rest[:-1])
        with pytest.raises(TypeError, match="key must be a tuple of 7 ints, but got list"):
            engine.transfer(False, list(key), *rest)
        with pytest.raises(TypeError, match="key must be a tuple of 7 ints, but got tuple"):
            engine.transfer(False, key[:6], *rest)
        with pytest.raises(TypeError, match="push must be a bool, but got int"):
            engine.transfer(0, key, *rest)
        with pytest.raises(TypeError, match="key_kind = 256 is out of range for uint8"):
            engine.transfer(False, (7, 256) + key[2:], *rest)
        with pytest.raises(TypeError, match="remote_cluster_id = -1 is out of range for uint64"):
            engine.transfer(False, (-1,) + key[1:], *rest)
        with pytest.raises(TypeError, match=r"local_batch_index = 4294967296 is out of range for uint32"):
            engine.transfer(False, key, dst.cache_id, False, 2**32, *rest[3:])
        with pytest.raises(TypeError, match="size must be an int, but got float"):
            engine.transfer(False, key, dst.cache_id, False, 0, -1.0, *rest[4:])
        with pytest.raises(TypeError, match=r"src_blocks\[0\] only support \[int\], but got str"):
            engine.transfer(False, key, dst.cache_id, False, 0, -1, ["0"], *rest[5:])
        # An object with __index__ is an int, as pybind11 takes it (numpy integers).
        with raises_code(LLMStatusCode.LLM_NOT_YET_LINK, match="cluster 7 is not linked"):
            engine.transfer(False, key, np.int64(dst.cache_id), *rest[1:])
    finally:
        cache_manager.deallocate_cache(dst)


def test_pulls_read_the_three_layer_keywords_and_ignore_others_as_upstream(cache_manager, caplog):
    """Upstream's pull_cache / pull_blocks take **kwargs and read src_layer_range,
    dst_layer_range and tensor_num_per_layer from it; here they are keyword-only parameters
    (a keyword into **kwargs costs a dict per call), checked as before, and any other keyword
    is still accepted, ignored, and warned about once."""
    cache = cache_manager.allocate_blocks_cache(blocks())
    contig = cache_manager.allocate_cache(contiguous())
    with pytest.raises(TypeError, match="tensor_num_per_layer"):
        cache_manager.pull_blocks(BlocksCacheKey(2, 0), cache, [0], [0], tensor_num_per_layer="2")
    with pytest.raises(TypeError, match="src_layer_range"):
        cache_manager.pull_cache(CacheKey(2, 1), contig, src_layer_range=[0, 1])
    with pytest.raises(TypeError):  # upstream's signature takes no fifth positional argument either
        cache_manager.pull_blocks(BlocksCacheKey(2, 0), cache, [0], [0], 2)
    from llm_datadist import _logging
    _logging._warned_kinds.difference_update({"pull_blocks.kwargs", "pull_cache.kwargs"})  # once per process
    with caplog.at_level("WARNING", logger="llm_datadist"):
        for call in (lambda: cache_manager.pull_blocks(BlocksCacheKey(2, 0), cache, [0], [0], no_such_keyword=1),
                     lambda: cache_manager.pull_cache(CacheKey(2, 1), contig, tensor_num_per_layer=2, other=3)):
            with raises_code(LLMStatusCode.LLM_NOT_YET_LINK, match="cluster 2 is not linked"):
                call()
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "pull_blocks ignores the keyword arguments ['no_such_keyword']" in warned
    assert "pull_cache ignores the keyword arguments ['other']" in warned
