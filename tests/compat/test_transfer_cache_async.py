# SPDX-License-Identifier: Apache-2.0
"""transfer_cache_async, CacheTask, TransferWithCacheKeyConfig and remap_registered_memory as
upstream has them (issue 11, items 5 and 6).

The layer-wise tests run a real prefill and a real decode (tests/integration's workers). In the
prefill, a "model" computes layer i after a delay: it writes the layer's K and V tensors with a
fresh pattern and then marks the layer ready in an event-backed LayerSynchronizer. The source
cache holds a different (stale) pattern before, so a push that ran ahead of its layer would
deliver stale bytes and the decode's byte-for-byte check would fail.
"""
from __future__ import annotations

import json
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, os.path.dirname(HERE))

import llm_datadist as ld  # noqa: E402
from llm_datadist import (BlocksCacheKey, CacheDesc, CacheKeyByIdAndIndex, DataType, LayerSynchronizer,  # noqa: E402
                          LLMException, LLMStatusCode, MemInfo, Memtype, Placement, TransferConfig,
                          TransferWithCacheKeyConfig)
from fake_cuda import CUDA_CHILD_CONFIG, build_fake_cuda, fake_cuda_env  # noqa: E402
from worker_fixtures import group  # noqa: E402,F401 - the shared worker fixture
from workers import (DECODE_ID, PREFILL_ID, block_copies, combine, desc, slot_copies, slot_to_block_copies,  # noqa: E402
                     start_pair, wait_link_state)

P, D = PREFILL_ID, DECODE_ID
LAYERS = 8
STALE, FRESH, DECODE_SEED = 11, 12, 13
LAYER_DELAY_S = 0.02
TRANSPORTS = ["shm", "tcp"]

# Runs in the prefill worker before each snippet (exec namespaces do not persist; state that
# must, a running task, is kept on the worker object `w`).
PRELUDE = r'''
import sys, threading, time
pattern_fill = w.op_fill


class EventSynchronizer(ld.LayerSynchronizer):
    """Layer i is ready once ready[i] is set. answer_false_at / raise_at: that layer answers
    False / raises. Every wait is bounded (60 s), so no thread outlives a test for long."""

    def __init__(self, num_layers, answer_false_at=None, raise_at=None):
        self.ready = [threading.Event() for _ in range(num_layers)]
        self.calls = []
        self.answer_false_at = answer_false_at
        self.raise_at = raise_at

    def synchronize_layer(self, layer_index, timeout_in_millis):
        self.calls.append([layer_index, timeout_in_millis])
        if layer_index == self.raise_at:
            raise RuntimeError(f"layer {layer_index} could not be computed")
        if layer_index == self.answer_false_at:
            return False
        return self.ready[layer_index].wait(60)


def compute(cache_id, layers, seed, delay_s, sync):
    """The model: layer i takes delay_s, then its K and V hold pattern(seed) and it is ready."""
    for i in layers:
        time.sleep(delay_s)
        pattern_fill(cache_id, seed, [2 * i, 2 * i + 1])
        sync.ready[i].set()


def key_of(spec):
    if spec["kind"] == "id_index":
        return ld.CacheKeyByIdAndIndex(spec["cluster_id"], spec["cache_id"], spec["batch_index"])
    return ld.BlocksCacheKey(spec["cluster_id"], spec["model_id"])


def config_of(s):
    if "addrs" in s:
        return ld.TransferConfig(s["cluster"], s["addrs"], range(*s["src"]), s.get("batch", 0))
    return ld.TransferWithCacheKeyConfig(key_of(s["key"]), range(*s["src"]), range(*s["dst"]), s.get("batch", 0))


def configs_of(specs):
    return [config_of(s) for s in specs]


def names(codes):
    return [None if c is None else c.name for c in codes]
'''

# Starts the task, computes every layer, waits for the task: the caller's side of upstream's
# layer-wise flow in one snippet.
RUN_TASK = PRELUDE + r'''
sync = EventSynchronizer(ARGS["layers"], ARGS.get("false_at"), ARGS.get("raise_at"))
t0 = time.monotonic()
task = cm.transfer_cache_async(w.cache(ARGS["src"]), sync, configs_of(ARGS["configs"]),
                               ARGS.get("src_blocks"), ARGS.get("dst_blocks"), ARGS.get("block_bytes"))
t_started = time.monotonic()
compute(ARGS["src"], ARGS.get("compute", range(ARGS["layers"])), ARGS["seed"], ARGS["delay"], sync)
t_computed = time.monotonic()
code = task.synchronize(ARGS.get("wait_ms", 30000))
t_done = time.monotonic()
result = {"code": code.name, "results": names(task.get_results(0)), "calls": sync.calls, "task": repr(task),
          "start_s": t_started - t0, "compute_s": t_computed - t_started, "total_s": t_done - t0}
'''


def run_task(prefill, **args):
    args.setdefault("layers", LAYERS)
    args.setdefault("seed", FRESH)
    args.setdefault("delay", LAYER_DELAY_S)
    return prefill.exec(f"ARGS = {json.dumps(args)}\n" + RUN_TASK, deadline=60.0)


def id_key(cache, batch_index):
    return {"kind": "id_index", "cluster_id": D, "cache_id": cache.cache_id, "batch_index": batch_index}


def blocks_key(model_id):
    return {"kind": "blocks", "cluster_id": D, "model_id": model_id}


def contig(placement="DEVICE"):
    return desc(2 * LAYERS, [4, 8, 64], "DT_FLOAT16", placement)   # 1 KiB slots


def paged(placement="DEVICE"):
    return desc(2 * LAYERS, [12, 4, 64], "DT_FLOAT16", placement)  # 12 blocks of 512 bytes


def _pair(group, transport, **prefill_init):
    return start_pair(group, transport, prefill_init=prefill_init or None)


# ---- the layer-wise push between two processes -----------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_prefill_computes_8_layers_while_they_are_pushed(group, transport):
    """Upstream: v2/cache_manager.py:490-507 (transfer_cache_async), v2/llm_utils.py:140-315
    (TransferCacheJob: synchronize_layer(i), then push layer i to every config; LLM_SUCCESS after
    a config's last layer). Every byte of the decode's slot, and nothing else, changes."""
    pair = _pair(group, transport)
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    p.fill(src, STALE)
    dst = d.allocate(contig())
    d.fill(dst, DECODE_SEED)
    out = run_task(p, src=src.cache_id, configs=[
        {"key": id_key(dst, 2), "src": [0, LAYERS], "dst": [0, LAYERS], "batch": 1}])
    assert out["code"] == "LLM_SUCCESS" and out["results"] == ["LLM_SUCCESS"], out
    assert [c[0] for c in out["calls"]] == list(range(LAYERS)), out["calls"]
    assert "done=1" in out["task"], out["task"]
    d.verify(dst, DECODE_SEED, slot_copies(src, FRESH, 1, dst, 2), "slot 2 after 8 layer-wise pushes")
    print(f"[{transport}] start {out['start_s'] * 1e3:.1f} ms, compute {out['compute_s'] * 1e3:.0f} ms, "
          f"total {out['total_s'] * 1e3:.0f} ms")


def slot_addrs(cache, slot, layers):
    """Upstream's TransferConfig.dst_addrs: per layer, K's and V's address of a slot start."""
    return [cache.addrs[t] + slot * cache.slot_bytes for layer in layers for t in (2 * layer, 2 * layer + 1)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_transfer_config_pushes_to_remote_addresses(group, transport):
    """Upstream: v2/llm_utils.py:186-193 (TransferConfig: layer i's K and V go to
    dst_addrs[2k], dst_addrs[2k+1], k = i - src_layer_range.start) and
    data_transfer/layer_wise_transfer_job.cc:29-44 (slot src_batch_index, one slot of bytes, to
    each address). Layers 0-3 go to a registered cache's slot 3, layers 4-7 to an allocated
    cache's slot 0, in one task."""
    pair = _pair(group, transport)
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    p.fill(src, STALE)
    registered = d.register(contig("HOST"))
    allocated = d.allocate(contig())
    d.fill(registered, DECODE_SEED)
    d.fill(allocated, DECODE_SEED + 1)
    out = run_task(p, src=src.cache_id, configs=[
        {"cluster": D, "addrs": slot_addrs(registered, 3, range(0, 4)), "src": [0, 4], "batch": 2},
        {"cluster": D, "addrs": slot_addrs(allocated, 0, range(4, 8)), "src": [4, 8], "batch": 2}])
    assert out["code"] == "LLM_SUCCESS" and out["results"] == ["LLM_SUCCESS", "LLM_SUCCESS"], out
    d.verify(registered, DECODE_SEED, slot_copies(src, FRESH, 2, registered, 3, src_layer_range=range(0, 4),
                                                  dst_layer_range=range(0, 4)), "layers 0-3 at their addresses")
    d.verify(allocated, DECODE_SEED + 1, slot_copies(src, FRESH, 2, allocated, 0, src_layer_range=range(4, 8),
                                                     dst_layer_range=range(4, 8)), "layers 4-7 at their addresses")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_transfer_config_with_block_indices_pushes_blocks_to_remote_addresses(group, transport):
    """Upstream: data_transfer/layer_wise_transfer_job.cc GenerateBlocksToBlocksTask (a
    TransferConfig's dst_addrs are the remote tensors' bases; block src_block_indices[j] goes to
    base + dst_block_indices[j] * block bytes). The remote blocks cache is named only by address."""
    pair = _pair(group, transport)
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(paged())
    p.fill(src, STALE)
    dst = d.allocate_blocks(paged())
    d.fill(dst, DECODE_SEED)
    src_blocks, dst_blocks = [0, 5, 11], [3, 4, 10]
    bases = [dst.addrs[t] for t in range(2 * LAYERS)]
    out = run_task(p, src=src.cache_id, src_blocks=src_blocks, dst_blocks=dst_blocks,
                   configs=[{"cluster": D, "addrs": bases, "src": [0, LAYERS]}])
    assert out["code"] == "LLM_SUCCESS" and out["results"] == ["LLM_SUCCESS"], out
    d.verify(dst, DECODE_SEED, block_copies(src, FRESH, src_blocks, dst, dst_blocks), "every layer's 3 blocks")
    # from a contiguous slot (1 KiB) into 2 remote blocks of 512 bytes named by address
    contiguous = p.allocate(contig())
    p.fill(contiguous, STALE)
    out = run_task(p, src=contiguous.cache_id, dst_blocks=[7, 1], block_bytes=512,
                   configs=[{"cluster": D, "addrs": bases, "src": [0, LAYERS], "batch": 3}])
    assert out["code"] == "LLM_SUCCESS" and out["results"] == ["LLM_SUCCESS"], out
    d.verify(dst, DECODE_SEED, combine(block_copies(src, FRESH, src_blocks, dst, dst_blocks),
                                       slot_to_block_copies(contiguous, FRESH, 3, dst, [7, 1])),
             "slot 3 in blocks 7 and 1, the earlier blocks kept")


def test_transfer_config_addresses_the_owner_does_not_hold(group):
    """Upstream: src/llm_datadist/data_transfer/layer_wise_transfer_job.cc (the remote address is
    written as given; here the owner checks it first). An address outside every cache is
    LLM_KV_CACHE_NOT_EXIST, one inside a slot LLM_PARAM_INVALID; nothing is written."""
    pair = _pair(group, "shm")
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    dst = d.allocate(contig())
    d.fill(dst, DECODE_SEED)
    outside = [dst.addrs[-1] + dst.tensor_bytes + (1 << 30)] * 2
    inside_a_slot = [a + 64 for a in slot_addrs(dst, 1, range(0, 1))]
    out = run_task(p, src=src.cache_id, layers=LAYERS, compute=list(range(LAYERS)), configs=[
        {"cluster": D, "addrs": outside, "src": [0, 1]}])
    assert out["results"] == ["LLM_KV_CACHE_NOT_EXIST"], out
    out = run_task(p, src=src.cache_id, layers=LAYERS, compute=list(range(LAYERS)), configs=[
        {"cluster": D, "addrs": inside_a_slot, "src": [0, 1]}])
    assert out["results"] == ["LLM_PARAM_INVALID"], out
    d.verify(dst, DECODE_SEED, what="untouched")


def test_two_destinations_blocks_and_shifted_layers(group):
    """Upstream: v2/llm_utils.py:160-229 (layers a config does not include are not sent to it;
    dst_layer_range maps source layers to remote layers; blocks src_block_indices[j] ->
    dst_block_indices[j]). Here: a blocks cache pushes layers 0-7 to remote blocks, and layers
    2-5 to remote layers 4-7 of a second blocks cache, in one task."""
    pair = _pair(group, "shm")
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(paged())
    p.fill(src, STALE)
    whole = d.allocate_blocks(paged(), {"kind": "blocks", "cluster_id": D, "model_id": 1})
    part = d.allocate_blocks(paged(), {"kind": "blocks", "cluster_id": D, "model_id": 2})
    d.fill(whole, DECODE_SEED)
    d.fill(part, DECODE_SEED + 1)
    src_blocks, dst_blocks = [0, 3, 4, 11], [7, 1, 2, 10]
    out = run_task(p, src=src.cache_id, src_blocks=src_blocks, dst_blocks=dst_blocks, configs=[
        {"key": blocks_key(1), "src": [0, LAYERS], "dst": [0, LAYERS]},
        {"key": blocks_key(2), "src": [2, 6], "dst": [4, 8]}])
    assert out["code"] == "LLM_SUCCESS" and out["results"] == ["LLM_SUCCESS", "LLM_SUCCESS"], out
    d.verify(whole, DECODE_SEED, block_copies(src, FRESH, src_blocks, whole, dst_blocks), "every layer")
    d.verify(part, DECODE_SEED + 1, block_copies(src, FRESH, src_blocks, part, dst_blocks, range(2, 6), range(4, 8)),
             "layers 2-5 into remote layers 4-7")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_contiguous_slot_pushed_into_remote_blocks(group, transport):
    """Upstream: src/llm_datadist/data_transfer/layer_wise_transfer_job.cc
    (GenerateCacheToBlocksTask: slot src_batch_index (0) cut into dst_block_memory_size pieces,
    piece j -> dst_block_indices[j], the last piece the rest). A 1 KiB slot into 384-byte blocks:
    384 + 384 + 256 bytes; the last block's other 128 bytes, and every other block, unchanged."""
    pair = _pair(group, transport)
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    p.fill(src, STALE)
    dst = d.allocate_blocks(desc(2 * LAYERS, [12, 3, 64], "DT_FLOAT16", "DEVICE"), blocks_key(3))
    d.fill(dst, DECODE_SEED)
    dst_blocks = [9, 2, 5]
    out = run_task(p, src=src.cache_id, dst_blocks=dst_blocks, block_bytes=384, configs=[
        {"key": blocks_key(3), "src": [0, LAYERS], "dst": [0, LAYERS]}])   # upstream: slot 0 with a BlocksCacheKey
    assert out["code"] == "LLM_SUCCESS" and out["results"] == ["LLM_SUCCESS"], out
    d.verify(dst, DECODE_SEED, slot_to_block_copies(src, FRESH, 0, dst, dst_blocks), "slot 0 in 3 blocks")
    # a block size that does not match the destination's is the owner's LLM_PARAM_INVALID
    out = run_task(p, src=src.cache_id, dst_blocks=[0], block_bytes=256, configs=[
        {"key": blocks_key(3), "src": [0, 1], "dst": [0, 1]}])
    assert out["results"] == ["LLM_PARAM_INVALID"], out
    d.verify(dst, DECODE_SEED, slot_to_block_copies(src, FRESH, 0, dst, dst_blocks), "unchanged by the refusal")


def test_upstream_sample_blocks_cache_without_block_indices(group):
    """Upstream: examples/python/llm_datadist/transfer_cache_async_sample.py (a blocks cache,
    TransferWithCacheKeyConfig(BlocksCacheKey, range(0, 1), range(0, 1)), no block indices) and
    src/llm_datadist/data_transfer/layer_wise_transfer_job.cc (that moves slot 0, i.e. block 0,
    to the remote slot 0). Run with enable_remote_cache_accessible, as the sample does."""
    pair = start_pair(group, "shm", prefill_init={"options": {"llm.EnableRemoteCacheAccessible": "1"}},
                      decode_init={"options": {"llm.EnableRemoteCacheAccessible": "1"}})
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(desc(2, [3, 10], "DT_FLOAT"))
    dst = d.allocate_blocks(desc(2, [3, 10], "DT_FLOAT"), {"kind": "blocks", "cluster_id": D, "model_id": 0})
    d.fill(dst, DECODE_SEED)
    out = run_task(p, src=src.cache_id, layers=1, configs=[{"key": blocks_key(0), "src": [0, 1], "dst": [0, 1]}])
    assert out["results"] == ["LLM_SUCCESS"], out
    d.verify(dst, DECODE_SEED, block_copies(src, FRESH, [0], dst, [0]), "block 0 of both tensors")


# ---- failures end the task with a code, never hang ------------------------------------------------

def test_synchronizer_false_stops_the_task(group):
    """Upstream: v2/llm_utils.py:165-171 (synchronize_layer False: the configs that include the
    layer get LLM_PARAM_INVALID and the job stops). Layers before it arrived; none after."""
    pair = _pair(group, "tcp")
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    p.fill(src, STALE)
    dst = d.allocate(contig())
    d.fill(dst, DECODE_SEED)
    out = run_task(p, src=src.cache_id, false_at=3, configs=[
        {"key": id_key(dst, 0), "src": [0, LAYERS], "dst": [0, LAYERS]}])
    assert out["code"] == "LLM_PARAM_INVALID" and out["results"] == ["LLM_PARAM_INVALID"], out
    assert [c[0] for c in out["calls"]] == [0, 1, 2, 3], out["calls"]
    d.verify(dst, DECODE_SEED, slot_copies(src, FRESH, 0, dst, 0, src_layer_range=range(0, 3),
                                            dst_layer_range=range(0, 3)), "layers 0-2 only")


def test_synchronizer_that_raises_fails_the_task(group):
    """Upstream: v2/llm_utils.py:292-296 (the job thread; upstream loses an exception raised by
    the synchronizer and reports nothing). Here it is the layer's failure: LLM_FAILED."""
    pair = _pair(group, "shm")
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    dst = d.allocate(contig())
    out = run_task(p, src=src.cache_id, raise_at=0, configs=[
        {"key": id_key(dst, 0), "src": [0, LAYERS], "dst": [0, LAYERS]}])
    assert out["code"] == "LLM_FAILED" and out["results"] == ["LLM_FAILED"], out


def test_layer_never_ready_times_out_at_sync_kv_timeout(group):
    """Upstream: v2/llm_types.py:669-686 (CacheTask.synchronize returns LLM_TIMEOUT while the task
    runs; upstream's task itself waits forever for a synchronizer that never returns). Here the
    synchronizer gets sync_kv_timeout and the task ends with LLM_TIMEOUT for the configs that
    needed the layer; configs already complete keep LLM_SUCCESS."""
    pair = _pair(group, "tcp", sync_kv_timeout=300)
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    p.fill(src, STALE)
    dst = d.allocate(contig())
    d.fill(dst, DECODE_SEED)
    out = run_task(p, src=src.cache_id, compute=[0, 1], configs=[
        {"key": id_key(dst, 0), "src": [0, 2], "dst": [0, 2]},
        {"key": id_key(dst, 1), "src": [0, LAYERS], "dst": [0, LAYERS]}])
    assert out["results"] == ["LLM_SUCCESS", "LLM_TIMEOUT"], out
    assert out["code"] == "LLM_TIMEOUT" and "done=2" in out["task"], out
    assert [c for c in out["calls"]] == [[0, 300], [1, 300], [2, 300]], out["calls"]
    # 30 s was the caller's wait: the task ended by itself (a hang guard, not a speed check)
    assert out["total_s"] < 20, out
    d.verify(dst, DECODE_SEED, combine(slot_copies(src, FRESH, 0, dst, 0, src_layer_range=range(0, 2),
                                                   dst_layer_range=range(0, 2)),
                                       slot_copies(src, FRESH, 0, dst, 1, src_layer_range=range(0, 2),
                                                   dst_layer_range=range(0, 2))))


KILL_START = PRELUDE + r'''
sync = EventSynchronizer(ARGS["layers"])
cfg = configs_of(ARGS["configs"])
w.layerwise = {"sync": sync, "task": cm.transfer_cache_async(w.cache(ARGS["src"]), sync, cfg)}
compute(ARGS["src"], range(3), ARGS["seed"], 0.0, sync)
deadline = time.monotonic() + 20
while dd.link_info(ARGS["peer"])["pushes"] < 3 and time.monotonic() < deadline:
    time.sleep(0.005)
result = dd.link_info(ARGS["peer"])["pushes"]
'''

KILL_FINISH = PRELUDE + r'''
state = w.layerwise
compute(ARGS["src"], range(3, ARGS["layers"]), ARGS["seed"], 0.0, state["sync"])
t0 = time.monotonic()
code = state["task"].synchronize(30000)
result = {"code": code.name, "results": names(state["task"].get_results(0)), "wait_s": time.monotonic() - t0,
          "task": repr(state["task"])}
'''


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_decode_killed_mid_task(group, transport):
    """Upstream: src/llm_datadist/cache_mgr/data_cache_engine.cc:452-485 (a transfer to a cluster
    whose link is gone fails with the link's code) and v2/llm_utils.py:172-178 (a failed layer
    stops the job with that code). The decode dies after 3 layers arrived."""
    pair = _pair(group, transport)
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())
    dst = d.allocate(contig())
    args = {"layers": LAYERS, "seed": FRESH, "src": src.cache_id, "peer": D,
            "configs": [{"key": id_key(dst, 0), "src": [0, LAYERS], "dst": [0, LAYERS]}]}
    pushes = p.exec(f"ARGS = {json.dumps(args)}\n" + KILL_START)
    assert pushes == 3, pushes
    d.kill()
    wait_link_state(p, D, "broken", timeout=5.0)
    out = p.exec(f"ARGS = {json.dumps(args)}\n" + KILL_FINISH, deadline=60.0)
    assert out["code"] == "LLM_LINK_FAILED" and out["results"] == ["LLM_LINK_FAILED"], out
    assert out["wait_s"] < 20 and "done=1" in out["task"], out  # a hang guard, not a speed check


# ---- argument checks (one process) ---------------------------------------------------------------

class Ready(LayerSynchronizer):
    def synchronize_layer(self, layer_index, timeout_in_millis):
        return True


def test_transfer_cache_async_argument_checks(cache_manager):
    """Upstream: v2/cache_manager.py:490-507 and v2/llm_utils.py:140-160, 231-289 (each check, its
    exception and code). Checked when the call is made, before any thread starts."""
    cm = cache_manager
    contiguous = cm.allocate_cache(CacheDesc(4, [2, 16], DataType.DT_FLOAT))
    odd = cm.allocate_cache(CacheDesc(3, [2, 16], DataType.DT_FLOAT))
    host = cm.allocate_cache(CacheDesc(4, [2, 16], DataType.DT_FLOAT, Placement.HOST))
    key_cfg = TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 1, 0), range(0, 2), range(0, 2))
    param = LLMStatusCode.LLM_PARAM_INVALID

    def code_of(call):
        with pytest.raises(LLMException) as info:
            call()
        return info.value.status_code, str(info.value)

    with pytest.raises(TypeError, match="src_cache"):
        cm.transfer_cache_async(None, Ready(), [key_cfg])
    assert code_of(lambda: cm.transfer_cache_async(host, Ready(), [key_cfg]))[0] == param
    with pytest.raises(TypeError, match="layer_synchronizer"):
        cm.transfer_cache_async(contiguous, None, [key_cfg])
    with pytest.raises(TypeError, match="transfer_configs"):
        cm.transfer_cache_async(contiguous, Ready(), key_cfg)
    with pytest.raises(TypeError, match=r"transfer_configs\[1\]"):
        cm.transfer_cache_async(contiguous, Ready(), [key_cfg, "x"])
    with pytest.raises(TypeError, match="src_block_indices"):
        cm.transfer_cache_async(contiguous, Ready(), [key_cfg], src_block_indices=3)
    with pytest.raises(ValueError, match="dst_block_indices"):
        cm.transfer_cache_async(contiguous, Ready(), [key_cfg], dst_block_indices=[-1])
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [key_cfg], [1], None))
    assert code == param and "blocks to cache" in msg
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [key_cfg], [1, 2], [3]))
    assert code == param and "src_num = 2, dst_num = 1" in msg
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [key_cfg], None, [3]))
    assert code == param and "dst_block_memory_size must be set" in msg
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [key_cfg], None, None, 64))
    assert code == param and "neither None nor 0" in msg
    code, msg = code_of(lambda: cm.transfer_cache_async(odd, Ready(), [key_cfg]))
    assert code == param and "(3) is not even" in msg
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [
        TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 1, 0), range(1, 3), range(0, 2))]))
    assert code == param and "range(1, 3) out of range, src_layer_num = 2" in msg
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [TransferConfig(2, [1, 2])]))
    assert code == param and "expect 4 dst_addrs" in msg
    # Checked, then refused: not provided by this implementation (docs/transfer.md).
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [TransferConfig(2, [1, 2, 3, 4])], None,
                                                        [1, 2, 3], 32))
    assert code == param and "fewer pieces than the 3 dst_block_indices" in msg
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [
        TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 1, 0), range(0, 2), range(0, 2))], None, [1], 32))
    assert code == param and "need a BlocksCacheKey" in msg
    # Fields changed after construction are checked here, where upstream uses them.
    changed = TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 1, 0), range(0, 2), range(0, 2))
    changed.dst_layer_range = range(0, 1)
    code, msg = code_of(lambda: cm.transfer_cache_async(contiguous, Ready(), [changed]))
    assert code == param and "size (2) should be equal to dst_layer_range range(0, 1) size (1)" in msg
    changed.dst_layer_range = None
    changed.cache_key = None
    with pytest.raises(TypeError, match=r"transfer_configs\[0\].cache_key"):
        cm.transfer_cache_async(contiguous, Ready(), [changed])
    # Nothing to send: a task that is done at once.
    task = cm.transfer_cache_async(contiguous, Ready(), [])
    assert task.synchronize(5000) == LLMStatusCode.LLM_SUCCESS and task.get_results() == []
    for cache in (contiguous, odd, host):
        cm.deallocate_cache(cache)


def test_transfer_to_an_unlinked_cluster_is_the_tasks_result(cache_manager):
    """Upstream: src/llm_datadist/cache_mgr/data_cache_engine.cc:458-460 (LLM_NOT_YET_LINK from
    the transfer, reported through the task, not raised)."""
    cache = cache_manager.allocate_cache(CacheDesc(4, [2, 16], DataType.DT_FLOAT))
    config = TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 1, 0), range(0, 2), range(0, 2))
    task = cache_manager.transfer_cache_async(cache, Ready(), [config])
    assert task.synchronize(10000) == LLMStatusCode.LLM_NOT_YET_LINK
    assert task.get_results() == [LLMStatusCode.LLM_NOT_YET_LINK]
    with pytest.raises(ValueError, match="timeout_in_millis"):
        task.synchronize(-1)
    cache_manager.deallocate_cache(cache)


def test_remote_cache_accessible_mode_takes_key_configs_only():
    """Upstream: v2/llm_utils.py:276-281 (with enable_remote_cache_accessible the configs must be
    TransferWithCacheKeyConfig: TypeError naming the mode)."""
    from config_helpers import make_config
    cfg = make_config()
    cfg.enable_remote_cache_accessible = True
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    dd.init(cfg.generate_options())
    try:
        cache = dd.cache_manager.allocate_cache(CacheDesc(4, [2, 16], DataType.DT_FLOAT))
        with pytest.raises(TypeError, match="While enable_remote_cache_accessible is True"):
            dd.cache_manager.transfer_cache_async(cache, Ready(), [TransferConfig(2, [1, 2, 3, 4])])
    finally:
        dd.finalize()


# ---- TransferWithCacheKeyConfig: plain attributes (item 5) ---------------------------------------

def test_transfer_with_cache_key_config_fields_are_plain_attributes():
    """Upstream: v2/llm_types.py:524-591 (constructor checks; the setters check only their own
    value, allow None, and dst_cluster_id is an attribute set from the key)."""
    cfg = TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 5, 1), range(0, 2), range(4, 6))
    assert cfg.dst_cluster_id == 2
    cfg.src_layer_range = range(0, 4)   # a new length, then the other side: no cross-check
    cfg.dst_layer_range = range(2, 6)
    assert (cfg.src_layer_range, cfg.dst_layer_range) == (range(0, 4), range(2, 6))
    cfg.src_layer_range = None
    cfg.dst_layer_range = None
    assert cfg.src_layer_range is None and cfg.dst_layer_range is None
    cfg.dst_cluster_id = 9
    assert cfg.dst_cluster_id == 9 and cfg.cache_key.cluster_id == 2
    cfg.cache_key = None
    assert cfg.cache_key is None
    cfg.cache_key = BlocksCacheKey(3)  # the batch index rule is the src_batch_index setter's
    with pytest.raises(LLMException, match="BlocksCacheKey"):
        cfg.src_batch_index = 1
    with pytest.raises(TypeError, match="src_layer_range"):
        cfg.src_layer_range = (0, 1)
    with pytest.raises(LLMException, match="step 1"):
        cfg.dst_layer_range = range(0, 4, 2)
    with pytest.raises(TypeError, match="cache_key"):
        cfg.cache_key = 5
    # The constructor keeps its checks.
    with pytest.raises(LLMException, match="should be equal"):
        TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 5, 1), range(0, 2), range(0, 3))
    with pytest.raises(TypeError, match="dst_layer_range"):
        TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(2, 5, 1), range(0, 2))


# ---- remap_registered_memory -----------------------------------------------------------------------

def test_remap_registered_memory_validates_as_upstream(cache_manager):
    """Upstream: v2/cache_manager.py:401-429 (LLMException LLM_PARAM_INVALID for each bad input,
    also for a wrong type). Valid input returns: our transports hold no registration a remap
    invalidates (see the method's docstring)."""
    param = LLMStatusCode.LLM_PARAM_INVALID
    for bad, match in ((None, "list of MemInfo or MemInfo"), ((MemInfo(Memtype.MEM_TYPE_DEVICE, 1, 1),), "tuple"),
                       ([MemInfo(Memtype.MEM_TYPE_DEVICE, 1, 1), 3], r"mem_infos\[1\]"),
                       ([MemInfo(Memtype.MEM_TYPE_HOST, 1, 1)], "MEM_TYPE_DEVICE, index=0"),
                       (MemInfo(Memtype.MEM_TYPE_DEVICE, 0, 1), "addr can not be zero"),
                       (MemInfo(Memtype.MEM_TYPE_DEVICE, 1, 0), "size must be > 0")):
        with pytest.raises(LLMException, match=match) as info:
            cache_manager.remap_registered_memory(bad)
        assert info.value.status_code == param
    cache = cache_manager.allocate_cache(CacheDesc(2, [2, 16], DataType.DT_FLOAT))
    cache_manager.remap_registered_memory(MemInfo(Memtype.MEM_TYPE_DEVICE, cache.tensor_addrs[0], 128))
    cache_manager.remap_registered_memory([MemInfo(Memtype.MEM_TYPE_DEVICE, a, 128) for a in cache.tensor_addrs])
    cache_manager.remap_registered_memory([])
    cache_manager.deallocate_cache(cache)


# ---- device memory (the CUDA backend; the fake CUDA driver on CPU-only hosts) ---------------------

DEVICE_COMMON = CUDA_CHILD_CONFIG + r'''
import json, sys, threading, time, numpy as np, llm_datadist as ld
LAYERS, BLOCKS, BLOCK = 4, 8, 4096
def pattern(tensor):
    return ((np.arange(BLOCKS * BLOCK, dtype=np.int64) * (tensor + 3) + tensor) % 251).astype(np.uint8).reshape(BLOCKS, BLOCK)
def blocks(cm, placement, key=None):
    desc = ld.CacheDesc(2 * LAYERS, [BLOCKS, BLOCK], ld.DataType.DT_UINT8, placement)
    return cm.allocate_blocks_cache(desc, key)
'''

# The owner of the destination: a device blocks cache; on "check", its bytes.
DEVICE_DECODE = DEVICE_COMMON + r'''
dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2); dd.init(config(sys.argv[1]))
cm = dd.cache_manager
dev = blocks(cm, ld.Placement.DEVICE, ld.BlocksCacheKey(2, 0))
print("ready", flush=True)
sys.stdin.readline()
host = blocks(cm, ld.Placement.HOST)
cm.swap_blocks(dev, host, {b: b for b in range(BLOCKS)})
mapping = {1: 6, 2: 0, 5: 5}
ok = all(np.array_equal(a[d], pattern(t)[s]) for t, a in enumerate(host.numpy()) for s, d in mapping.items())
untouched = all(not a[b].any() for a in host.numpy() for b in range(BLOCKS) if b not in mapping.values())
print("RESULT " + json.dumps({"bytes": bool(ok), "untouched": bool(untouched)}), flush=True)
dd.finalize()
'''

# The prefill: layer i of a device blocks cache is "computed" (swapped in from host) while the
# layers before it are pushed.
DEVICE_PREFILL = DEVICE_COMMON + r'''
dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1); dd.init(config(transport=sys.argv[2]))
cm = dd.cache_manager
cluster = ld.LLMClusterInfo(); cluster.remote_cluster_id = 2
cluster.append_remote_ip_info("127.0.0.1", int(sys.argv[1]))
assert dd.link_clusters([cluster], 5000)[0] == ld.LLMStatusCode.LLM_SUCCESS
dev = blocks(cm, ld.Placement.DEVICE)
host = blocks(cm, ld.Placement.HOST)
for t, a in enumerate(host.numpy()): a[...] = pattern(t)
ready = [threading.Event() for _ in range(LAYERS)]
class Sync(ld.LayerSynchronizer):
    def synchronize_layer(self, layer_index, timeout_in_millis):
        return ready[layer_index].wait(timeout_in_millis / 1000)
config_ = ld.TransferWithCacheKeyConfig(ld.BlocksCacheKey(2, 0), range(0, LAYERS), range(0, LAYERS))
task = cm.transfer_cache_async(dev, Sync(), [config_], [1, 2, 5], [6, 0, 5])
for i in range(LAYERS):
    time.sleep(0.01)
    # the layer's K and V land on the device: a swap_blocks of those two tensors, through a
    # view of them registered as a cache of their own
    src = ld.Cache.create_cpu_cache(ld.CacheDesc(2, [BLOCKS, BLOCK], ld.DataType.DT_UINT8, ld.Placement.HOST),
                                    host.tensor_addrs[2 * i:2 * i + 2])
    layer = cm.register_blocks_cache(ld.CacheDesc(2, [BLOCKS, BLOCK], ld.DataType.DT_UINT8, ld.Placement.DEVICE),
                                     dev.tensor_addrs[2 * i:2 * i + 2])
    cm.swap_blocks(src, layer, {b: b for b in range(BLOCKS)})
    cm.unregister_cache(layer.cache_id)
    ready[i].set()
print("RESULT " + json.dumps({"code": task.synchronize(30000).name, "info": dd.link_info(2)}), flush=True)
dd.finalize()
'''


def _result(text):
    return json.loads([line for line in text.splitlines() if line.startswith("RESULT ")][-1][len("RESULT "):])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_layerwise_push_of_device_memory_on_fake_cuda(tmp_path_factory, transport):
    """Upstream: v2/cache_manager.py:490-507 (the source is device memory: placement HOST is
    refused) and examples/python/llm_datadist/transfer_cache_async_sample.py (a blocks cache to
    a remote BlocksCacheKey). Device blocks pushed layer by layer while each layer lands on the
    device, over a cuda_ipc/shm link and over tcp, against the fake CUDA driver."""
    import socket
    import subprocess
    sys.path.insert(0, os.path.dirname(HERE))
    lib = build_fake_cuda(tmp_path_factory.mktemp("fake_cuda"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMDD_")}
    env.update(fake_cuda_env(lib))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    decode = subprocess.Popen([sys.executable, "-c", DEVICE_DECODE, f"127.0.0.1:{port}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    try:
        assert decode.stdout.readline().strip() == "ready", decode.stderr.read()
        prefill = subprocess.run([sys.executable, "-c", DEVICE_PREFILL, str(port), transport], capture_output=True,
                                 text=True, timeout=60, env=env)
        assert prefill.returncode == 0, prefill.stdout + prefill.stderr
        pushed = _result(prefill.stdout)
        assert pushed["code"] == "LLM_SUCCESS", (pushed, prefill.stderr)
        assert pushed["info"]["pushes"] == 4 and pushed["info"]["transport"] == ("tcp" if transport == "tcp" else "shm")
        out, err = decode.communicate("check\n", timeout=60)
        received = _result(out)
        assert received["bytes"] and received["untouched"], (received, err)
    finally:
        if decode.poll() is None:
            decode.kill()
        decode.wait()
