# SPDX-License-Identifier: Apache-2.0
"""What only the ucx transport has: the owner does not stream a ucx pull (its pools are read with
one-sided UCX gets), link_info says so and why, and a get stalled mid-transfer ends at
sync_kv_timeout with the owner still serving afterwards. The transport-parametrized tests of this
directory (test_pull.py, test_link.py, test_scale_and_faults.py, ...) run over ucx too.

Both ends force it (llmdd.Transport="ucx"), over UCX's tcp on the loopback device (conftest.py);
skipped where UCX does not load.
"""
from __future__ import annotations

import time

import pytest

from workers import (DECODE_ID, PREFILL_ID, block_copies, blocks_key, cluster_of, desc, expect_code, req_key,
                     slot_copies, start_pair)
from llm_datadist import _core

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not _core.ucx_info()["available"],
                                 reason="UCX (libucp) does not load here: " + _core.ucx_info()["reason"])]

P, D = PREFILL_ID, DECODE_ID


def test_pools_are_read_one_sided_and_link_info_says_ucx(group):
    pair = start_pair(group, "ucx")
    p, d = pair.prefill, pair.decode
    info = d.link_info(P)
    assert info["transport"] == "ucx" and "ucx forced" in info["reason"] and "tcp/lo" in info["reason"], info
    assert p.link_info(D)["transport"] == "ucx"
    for i, placement in enumerate(["HOST", "DEVICE"]):
        layout = desc(4, [4, 64, 128], "DT_FLOAT16", placement)
        src = p.allocate(layout, keys=[req_key(P, 100 * i + b) for b in range(4)])
        p.fill(src, 21 + i)
        dst = d.allocate(layout)
        d.fill(dst, 3)
        d.ok(d.pull_cache(req_key(P, 100 * i + 2), dst, batch_index=1))
        d.verify(dst, 3, slot_copies(src, 21 + i, 2, dst, 1), f"{placement} pull over ucx")
        # a req key is consumed by a complete pull, whichever transport moved the bytes
        expect_code(d.pull_cache(req_key(P, 100 * i + 2), dst), "LLM_KV_CACHE_NOT_EXIST")
    pulled, served = d.link_info(P)["bytes_pulled"], p.link_info(D)["bytes_served"]
    assert pulled == 2 * 4 * 64 * 128 * 2, pulled
    assert served == 0, f"the owner streamed {served} bytes: the pulls did not go one-sided"


def test_a_get_stalled_mid_transfer_times_out_and_the_owner_keeps_serving(group):
    pool = {"pool_bytes": 256 << 20, "device_pool": False}
    pair = start_pair(group, "ucx", prefill_init=pool, decode_init=dict(pool, sync_kv_timeout=1000))
    p, d = pair.prefill, pair.decode
    layout = desc(4, [256, 131072], "DT_UINT8", "HOST")  # 128 MiB: well over 100 ms on this path
    src = p.allocate_blocks(layout, blocks_key(P, 0))
    p.fill(src, 7)
    dst = d.allocate_blocks(layout)
    d.fill(dst, 1)
    blocks = list(range(256))
    rid = d.send("pull_blocks", key=blocks_key(P, 0), cache=dst.cache_id, src_blocks=blocks, dst_blocks=blocks)
    time.sleep(0.05)
    p.freeze()
    try:
        reply = d.wait(rid, 15)
        expect_code(reply, "LLM_TIMEOUT", what="pull whose owner froze")
        assert 0.9 <= reply.elapsed_s < 4.0, reply.elapsed_s
        print(f"[ucx] stalled pull: {reply.message}")
    finally:
        p.thaw()
    time.sleep(0.5)
    assert p.alive, "the owner died after its requester cancelled a get:\n" + p.stderr_text()
    ret = d.link([cluster_of(p)])
    assert ret["per_cluster"] == ["LLM_SUCCESS"], ret
    assert d.link_info(P)["transport"] == "ucx"
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, blocks[:64], blocks[:64]))
    d.verify(dst, None, block_copies(src, 7, blocks[:64], dst, blocks[:64]), "after relink")


def test_registered_caches_are_read_one_sided_once_announced(group):
    """A cache registered before the link (announced when it comes up) and one registered after it
    (announced then) are read with UCX gets, not streamed; after unregister_cache and a new
    registration the new one is read, every byte right."""
    p = group.spawn("prefill", role="PROMPT", cluster_id=P, listen=True, transport="ucx")
    d = group.spawn("decode", role="DECODER", cluster_id=D, transport="ucx")
    layout = desc(4, [4, 64, 128], "DT_FLOAT16", "HOST")
    before = p.register(layout, keys=[req_key(P, 1)])
    p.fill(before, 31)
    d.link_to(p)
    after = p.register(layout, keys=[req_key(P, 2)])
    p.fill(after, 32)
    dst = d.allocate(layout)
    d.fill(dst, 5)
    d.ok(d.pull_cache(req_key(P, 1), dst, batch_index=0))
    d.ok(d.pull_cache(req_key(P, 2), dst, batch_index=1))
    d.verify(dst, 5, slot_copies(before, 31, 0, dst, 0) + slot_copies(after, 32, 0, dst, 1), "registered sources")
    assert p.link_info(D)["bytes_served"] == 0, "a registered cache was streamed, not read one-sided"
    p.call("unregister", cache=after.cache_id)
    again = p.register(layout, keys=[req_key(P, 3)])
    p.fill(again, 33)
    d.ok(d.pull_cache(req_key(P, 3), dst, batch_index=2))
    d.verify(dst, 5, slot_copies(before, 31, 0, dst, 0) + slot_copies(after, 32, 0, dst, 1)
             + slot_copies(again, 33, 0, dst, 2), "after unregister and a new registration")
    assert p.link_info(D)["bytes_served"] == 0
