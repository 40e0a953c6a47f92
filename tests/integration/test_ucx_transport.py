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

from workers import (DECODE_ID, PREFILL_ID, block_copies, blocks_key, cluster_of, desc, expect_code, id_key,
                     req_key, slot_copies, start_pair)
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


# ---- pushes: one-sided UCX puts ---------------------------------------------------------------

def _push_counters(d, p):
    info = d.link_info(P)
    return info["bytes_pushed"], info["bytes_pushed_one_sided"], info["data_bytes_sent"], p.link_info(D)["bytes_served"]


def test_pushes_are_written_one_sided_not_streamed(group):
    """push_cache (pool and registered destinations) and push_blocks over ucx: the requester writes
    the owner's memory with UCX puts after the owner described it; no data byte goes on the link's
    connection, every byte lands."""
    pair = start_pair(group, "ucx")
    p, d = pair.prefill, pair.decode
    contig = desc(4, [4, 64, 128], "DT_FLOAT16", "HOST")
    src = d.allocate(contig)
    d.fill(src, 61)
    expected = 0
    for i, placement in enumerate(["HOST", "DEVICE"]):
        dst = p.allocate(desc(4, [4, 64, 128], "DT_FLOAT16", placement))
        p.fill(dst, 62 + i)
        d.ok(d.push_cache(id_key(P, dst.cache_id, 2), src, src_batch_index=1))
        d.ok(d.push_cache(id_key(P, dst.cache_id, 0), src, src_batch_index=3, src_layer_range=range(1, 2),
                          dst_layer_range=range(0, 1)))
        p.verify(dst, 62 + i, slot_copies(src, 61, 1, dst, 2)
                 + slot_copies(src, 61, 3, dst, 0, src_layer_range=range(1, 2), dst_layer_range=range(0, 1)),
                 f"push_cache into the owner's {placement} pool over ucx")
        expected += (4 + 2) * 64 * 128 * 2  # a whole slot, then one layer (2 tensors)
    registered = p.register(contig)  # announced to the peer with its own UCX keys
    p.fill(registered, 64)
    d.ok(d.push_cache(id_key(P, registered.cache_id, 3), src))
    p.verify(registered, 64, slot_copies(src, 61, 0, registered, 3), "push_cache into registered memory")
    expected += 4 * 64 * 128 * 2
    paged = desc(4, [16, 16, 2, 64], "DT_BF16", "DEVICE")
    src_blocks = d.allocate_blocks(paged)
    d.fill(src_blocks, 65)
    dst_blocks = p.allocate_blocks(paged, blocks_key(P, 5))
    p.fill(dst_blocks, 66)
    d.ok(d.push_blocks(blocks_key(P, 5), src_blocks, [1, 2, 3, 9], [7, 8, 9, 0]))
    d.ok(d.push_blocks(blocks_key(P, 5), src_blocks, [4], [15], src_layer_range=range(0, 1),
                       dst_layer_range=range(1, 2)))
    p.verify(dst_blocks, 66, block_copies(src_blocks, 65, [1, 2, 3, 9], dst_blocks, [7, 8, 9, 0])
             + block_copies(src_blocks, 65, [4], dst_blocks, [15], src_layer_range=range(0, 1),
                            dst_layer_range=range(1, 2)), "push_blocks over ucx")
    expected += (4 * 4 + 2) * 16 * 2 * 64 * 2  # 4 blocks of 4 tensors, then one block of one layer
    pushed, one_sided, streamed, served = _push_counters(d, p)
    assert pushed == expected, (pushed, expected)
    assert one_sided == expected, f"{one_sided} of {expected} pushed bytes were written one-sided"
    assert streamed == 0, f"{streamed} data bytes went on the link's connection: the pushes streamed"
    assert served == expected, (served, expected)  # the owner counts what it let the peer write


def test_refused_pushes_over_ucx_give_the_owners_codes_and_messages_as_over_tcp(group):
    """The owner checks a described push exactly as a streamed one: the same code and message for
    every refusal, over tcp (streamed) and over ucx (described, nothing streamed), and nothing
    written."""
    results = {}
    for transport in ("tcp", "ucx"):
        pair = start_pair(group, transport)
        p, d = pair.prefill, pair.decode
        remote = p.allocate(desc(4, [4, 64, 128], "DT_FLOAT16", "HOST"))
        p.fill(remote, 71)
        remote_blocks = p.allocate_blocks(desc(4, [16, 16, 2, 64], "DT_BF16", "HOST"), blocks_key(P, 7))
        p.fill(remote_blocks, 72)
        src = d.allocate(desc(4, [4, 64, 128], "DT_FLOAT16", "HOST"))
        src_big = d.allocate(desc(4, [4, 64, 256], "DT_FLOAT16", "HOST"))
        src6 = d.allocate(desc(6, [4, 64, 128], "DT_FLOAT16", "HOST"))
        src_blocks = d.allocate_blocks(desc(4, [16, 16, 2, 64], "DT_BF16", "HOST"))
        src_blocks_big = d.allocate_blocks(desc(4, [16, 32, 2, 64], "DT_BF16", "HOST"))
        rid = remote.cache_id
        replies = [
            d.push_cache(id_key(P, rid, 0), src_big),                 # slot bytes differ
            d.push_cache(id_key(P, rid, 0), src6),                    # 6 local tensors, 4 remote
            d.push_cache(id_key(P, rid, 0), src, src_layer_range=range(0, 2), dst_layer_range=range(3, 5)),
            d.push_cache(id_key(P, remote_blocks.cache_id, 0), src),  # into a blocks cache
            d.push_cache(id_key(P, rid, 4), src),                     # no batch index 4
            d.push_cache(id_key(P, 8686868, 0), src),                 # no such cache
            d.push_blocks(blocks_key(P, 7), src_blocks_big, [0], [0]),  # block bytes differ
            d.push_blocks(blocks_key(P, 7), src_blocks, [0], [16]),   # remote block out of range
            d.push_blocks(blocks_key(P, 9191919), src_blocks, [0], [0]),  # no such key
        ]
        assert not any(r.ok for r in replies), [r.op for r in replies if r.ok]
        results[transport] = [(r.code, r.message) for r in replies]
        p.verify(remote, 71, what=f"after every refused push over {transport}")
        p.verify(remote_blocks, 72, what=f"after every refused push over {transport}")
        if transport == "ucx":
            info = d.link_info(P)
            assert info["data_bytes_sent"] == 0, "a refused push over ucx streamed its data"
            assert info["pushes"] == 0 and info["errors"] == len(replies), info
        pair.decode.close()
        pair.prefill.close()
    for (tcp_code, tcp_msg), (ucx_code, ucx_msg) in zip(results["tcp"], results["ucx"]):
        assert (ucx_code, ucx_msg) == (tcp_code, tcp_msg)
    codes = [code for code, _ in results["ucx"]]
    assert codes == ["LLM_PARAM_INVALID"] * 4 + ["LLM_KV_CACHE_NOT_EXIST"] * 2 + ["LLM_PARAM_INVALID"] * 2 \
        + ["LLM_KV_CACHE_NOT_EXIST"], results["ucx"]


def test_a_push_the_owner_will_not_describe_is_streamed(group):
    """A decode without pools offers no UCX regions, so the prefill's end of the link has no
    one-sided transport and refuses to describe a push (LLM_FEATURE_NOT_ENABLED): the decode
    streams it instead, and the next ones at once; every byte lands."""
    p = group.spawn("prefill", role="PROMPT", cluster_id=P, listen=True, transport="ucx")
    d = group.spawn("decode", role="DECODER", cluster_id=D, transport="ucx", host_pool=False, device_pool=False)
    d.link_to(p)
    assert d.link_info(P)["transport"] == "ucx" and p.link_info(D)["transport"] == "tcp"
    layout = desc(4, [4, 64, 128], "DT_FLOAT16", "HOST")
    src = d.register(layout)
    d.fill(src, 91)
    dst = p.allocate(layout)
    p.fill(dst, 92)
    d.ok(d.push_cache(id_key(P, dst.cache_id, 1), src, src_batch_index=2))
    d.ok(d.push_cache(id_key(P, dst.cache_id, 3), src, src_batch_index=0))
    p.verify(dst, 92, slot_copies(src, 91, 2, dst, 1) + slot_copies(src, 91, 0, dst, 3), "streamed pushes")
    info = d.link_info(P)
    assert info["bytes_pushed"] == info["data_bytes_sent"] == 2 * 4 * 64 * 128 * 2, info
    assert info["bytes_pushed_one_sided"] == 0 and info["errors"] == 0, info


def test_a_requester_killed_during_a_one_sided_push_leaves_the_owner_serving(group):
    """The requester dies after the owner described the destination and while it writes: the owner
    drops what it held for the link when the link goes, stays healthy, and a new requester
    pushes (and pulls) over ucx, every byte checked."""
    pool = {"pool_bytes": 256 << 20, "device_pool": False}
    p = group.spawn("prefill", role="PROMPT", cluster_id=P, listen=True, transport="ucx", **pool)
    d = group.spawn("decode", role="DECODER", cluster_id=D, transport="ucx", **pool)
    d.link_to(p)
    layout = desc(4, [1, 32 << 20], "DT_UINT8", "HOST")  # 128 MiB: a write well over the kill delay
    dst = p.allocate(layout)
    p.fill(dst, 81)
    src = d.allocate(layout)
    d.fill(src, 82)
    d.send("push_cache", thread=True, key=id_key(P, dst.cache_id, 0), cache=src.cache_id)
    deadline = time.monotonic() + 10
    while p.link_info(D)["held"] == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    # the owner holds the described destination: the requester is writing it
    held = p.link_info(D)["held"]
    d.kill()
    assert held == 1, "the push was not between describe and completion when the requester died"
    assert _wait_link_gone(p, D, 5.0), "the owner kept the dead requester's link"
    assert p.alive, "the owner died with its requester:\n" + p.stderr_text()
    d2 = group.spawn("decode2", role="DECODER", cluster_id=D, transport="ucx", **pool)
    d2.link_to(p)
    small = desc(4, [4, 64, 128], "DT_FLOAT16", "HOST")
    dst2 = p.allocate(small)
    p.fill(dst2, 83)
    src2 = d2.allocate(small)
    d2.fill(src2, 84)
    d2.ok(d2.push_cache(id_key(P, dst2.cache_id, 1), src2, src_batch_index=2))
    p.verify(dst2, 83, slot_copies(src2, 84, 2, dst2, 1), "a push by the next requester")
    assert d2.link_info(P)["bytes_pushed_one_sided"] == 64 * 128 * 2 * 4
    assert p.link_info(D)["held"] == 0


def _wait_link_gone(p, cluster_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if p.link_info(cluster_id)["state"] != "active":
                return True
        except Exception:  # not linked any more
            return True
        time.sleep(0.02)
    return False
