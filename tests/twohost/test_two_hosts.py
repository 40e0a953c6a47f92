# SPDX-License-Identifier: Apache-2.0
"""A prefill on one host and decodes on another (two network namespaces and a veth, llm_datadist._bench.netns),
over each cross-host transport: every transfer kind with every byte checked, 4 decoders at once,
a partition in the middle of a pull, a killed prefill, and a rate-limited veth (issue 12 item 3).

Bounds are loose on purpose (a busy 2-core machine must never make them flake); the measured
times are printed (pytest -s) and `llm-datadist bench --crossns` reports the exact speeds.
"""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from llm_datadist import _core
from llm_datadist._bench import netns
from twohost_workers import link_across, spawn_on, start_cross_pair, start_on, ucx_unavailable
from workers import (DECODE_ID, PREFILL_ID, block_copies, blocks_key, cluster_of, desc, expect_code, id_key,
                     prefix_key, req_key, slot_copies, slot_to_block_copies, wait_for, wait_link_state)

pytestmark = pytest.mark.timeout(90)

P, D = PREFILL_ID, DECODE_ID
LINK_FAILED, TIMEOUT = "LLM_LINK_FAILED", "LLM_TIMEOUT"
SMALL_POOL = {"pool_bytes": 16 << 20, "device_pool": False}


def contig(batch=4, num_tensors=4, tail=(64, 128), placement="HOST"):
    return desc(num_tensors, [batch, *tail], "DT_FLOAT16", placement)


def paged(num_blocks=32, num_tensors=4, block=(16, 2, 64), placement="HOST"):
    return desc(num_tensors, [num_blocks, *block], "DT_BF16", placement)


# ---- the harness ---------------------------------------------------------------------------------

def test_harness_close_kills_what_runs_inside_and_deletes_the_namespaces(group):
    if netns.unavailable():
        pytest.skip(netns.unavailable())
    extra = netns.Hosts(3)  # through a bridge in a switch namespace
    try:
        names = [h.netns for h in extra] + [extra.switch]
        w = start_on(extra[2], group, "sleeper").wait_ready()
        assert w.pid in extra[2].pids()
        out = extra[1].run("ip", "-o", "addr", "show", "dev", extra[1].veth).stdout
        assert f"{extra[1].ip}/24" in out, out
        routes = extra[1].run("ip", "route", "show").stdout
        assert "default" not in routes, routes  # nothing is routed out of the namespaces
    finally:
        extra.close()
    assert wait_for(lambda: not w.alive, 5.0), "a worker inside a closed namespace survived"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert not any(n in listed for n in names), listed


def test_three_hosts_two_decodes_on_two_hosts(group):
    if netns.unavailable():
        pytest.skip(netns.unavailable())
    with netns.Hosts(3) as three:
        p = spawn_on(three[0], group, "prefill", role="PROMPT", cluster_id=P, listen=True, **SMALL_POOL)
        src = p.allocate(contig(), keys=[prefix_key(P, 1)])
        p.fill(src, 91)
        for k in (1, 2):
            d = spawn_on(three[k], group, f"decode{k}", role="DECODER", cluster_id=100 + k, **SMALL_POOL)
            link_across(d, p, three[0].ip)
            assert "another host" in d.link_info(P)["reason"]
            dst = d.allocate(contig())
            d.fill(dst, 92)
            d.ok(d.pull_cache(prefix_key(P, 1), dst, batch_index=k))
            d.verify(dst, 92, slot_copies(src, 91, 0, dst, k), f"decode on host {k}")


# ---- the link says what it is ------------------------------------------------------------------

def test_namespaces_are_two_hosts(group, hosts):
    """Without a forced transport the handshake sees another host: no shm, no CMA, no CUDA IPC
    (before the host identity included the namespace, these links read each other's memory
    with CMA and never crossed the veth)."""
    pair = start_cross_pair(group, hosts, None, prefill_init=SMALL_POOL, decode_init=SMALL_POOL)
    p, d = pair.prefill, pair.decode
    # auto links other hosts over UCX only where it has RDMA (ucx_info's auto_between_hosts)
    want = "ucx" if ucx_unavailable() is None and _core.ucx_info()["auto_between_hosts"] else "tcp"
    for w, peer, addr in ((d, P, f"{hosts[0].ip}:{p.listen_port}"), (p, D, None)):
        info = w.link_info(peer)
        assert info["state"] == "active", info
        assert info["transport"] == want, info
        assert "another host" in info["reason"], info
        assert info["channel"] == "tcp" and not info["cuda_ipc"], info
        if addr is not None:
            assert info["remote_address"] == addr, info
    # and the bytes did cross the veth: its counters moved by at least the pulled bytes
    src = p.allocate(contig(), keys=[req_key(P, 1)])
    p.fill(src, 1)
    dst = d.allocate(contig())
    d.fill(dst, 2)
    before = _rx_bytes(hosts[1])
    d.ok(d.pull_cache(req_key(P, 1), dst, batch_index=2))
    d.verify(dst, 2, slot_copies(src, 1, 0, dst, 2))
    crossed = _rx_bytes(hosts[1]) - before
    assert crossed >= src.slot_bytes * src.num_tensors, f"only {crossed} bytes came in over the veth"


def _rx_bytes(host) -> int:
    return int(host.run("cat", f"/sys/class/net/{host.veth}/statistics/rx_bytes").stdout)


def test_forced_transport_is_used_across_hosts_and_crosses_the_veth(cross_pair, hosts, transport):
    """Also for ucx: UCX left to itself takes a same-machine path (shared memory, CMA) between two
    namespaces of one machine (bench --crossns measured NIXL's: 0 bytes on the veth), which
    would test nothing of a cross-host link; the bytes must come in over the veth."""
    p, d = cross_pair.prefill, cross_pair.decode
    for w, peer in ((d, P), (p, D)):
        info = w.link_info(peer)
        assert info["transport"] == transport and info["state"] == "active", info
        assert info["peer_pid"] == (p.pid if w is d else d.pid), info
    src = p.allocate_blocks(desc(2, [64, 65536], "DT_UINT8", "HOST"), blocks_key(P, 0))
    p.fill(src, 3)
    dst = d.allocate_blocks(desc(2, [64, 65536], "DT_UINT8", "HOST"))
    d.fill(dst, 4)
    before = _rx_bytes(hosts[1])
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, list(range(64)), list(range(64))[::-1]))
    crossed = _rx_bytes(hosts[1]) - before
    d.verify(dst, 4, block_copies(src, 3, list(range(64)), dst, list(range(64))[::-1]))
    assert crossed >= src.tensor_bytes * src.num_tensors, (
        f"{crossed} bytes came in over the veth for a {src.tensor_bytes * src.num_tensors}-byte pull: "
        f"the {transport} link went around the network")


# ---- every transfer kind, every byte ----------------------------------------------------------

def test_pull_blocks_across_hosts(cross_pair, transport):
    p, d = cross_pair.prefill, cross_pair.decode
    src = p.allocate_blocks(paged(), blocks_key(P, 0))
    p.fill(src, 11)
    dst = d.allocate_blocks(paged())
    d.fill(dst, 12)
    src_b, dst_b = [0, 5, 6, 7, 31, 2], [9, 1, 2, 3, 0, 31]
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, src_b, dst_b))
    copies = block_copies(src, 11, src_b, dst, dst_b)
    d.verify(dst, 12, copies, "pulled blocks")
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, [20], [20], src_layer_range=range(1, 2), dst_layer_range=range(0, 1)))
    copies += block_copies(src, 11, [20], dst, [20], src_layer_range=range(1, 2), dst_layer_range=range(0, 1))
    d.verify(dst, 12, copies, "one layer")
    # a contiguous remote slot into local blocks
    slot_src = p.allocate(desc(4, [2, 16, 2, 64 * 3], "DT_BF16", "HOST"), keys=[prefix_key(P, 7)])
    p.fill(slot_src, 13)
    d.ok(d.pull_blocks(prefix_key(P, 7), dst, [], [10, 11, 12]))
    copies += slot_to_block_copies(slot_src, 13, 0, dst, [10, 11, 12])
    d.verify(dst, 12, copies, "slot into blocks")
    p.verify(src, 11, what="the owner's bytes")


def test_pull_cache_across_hosts(cross_pair, transport):
    p, d = cross_pair.prefill, cross_pair.decode
    src = p.allocate(contig(), keys=[req_key(P, 100 + i) for i in range(4)])
    p.fill(src, 21)
    dst = d.allocate(contig())
    d.fill(dst, 22)
    d.ok(d.pull_cache(req_key(P, 102), dst, batch_index=0))
    copies = slot_copies(src, 21, 2, dst, 0)
    d.verify(dst, 22, copies, "req 102 -> slot 0")
    d.ok(d.pull_cache(id_key(P, src.cache_id, 3), dst, batch_index=3, src_layer_range=range(0, 1),
                      dst_layer_range=range(1, 2)))
    copies += slot_copies(src, 21, 3, dst, 3, src_layer_range=range(0, 1), dst_layer_range=range(1, 2))
    d.verify(dst, 22, copies, "one layer by id and index")
    # a req key is consumed by its pull, across hosts as on one
    expect_code(d.pull_cache(req_key(P, 102), dst, batch_index=1), "LLM_KV_CACHE_NOT_EXIST", what="consumed key")
    d.verify(dst, 22, copies, "the refused pull wrote nothing")


def test_push_blocks_and_push_cache_across_hosts(cross_pair, transport):
    p, d = cross_pair.prefill, cross_pair.decode
    before = d.link_info(P)
    src = d.allocate_blocks(paged())
    d.fill(src, 31)
    dst = p.allocate_blocks(paged(), blocks_key(P, 5))
    p.fill(dst, 32)
    d.ok(d.push_blocks(blocks_key(P, 5), src, [1, 2, 3, 30], [7, 8, 9, 0]))
    p.verify(dst, 32, block_copies(src, 31, [1, 2, 3, 30], dst, [7, 8, 9, 0]), "pushed blocks")
    csrc = d.allocate(contig())
    d.fill(csrc, 33)
    cdst = p.allocate(contig())
    p.fill(cdst, 34)
    d.ok(d.push_cache(id_key(P, cdst.cache_id, 2), csrc, src_batch_index=1))
    ccopies = slot_copies(csrc, 33, 1, cdst, 2)
    p.verify(cdst, 34, ccopies, "pushed slot 1 -> remote slot 2")
    d.ok(d.push_cache(id_key(P, cdst.cache_id, 0), csrc, src_batch_index=3, src_layer_range=range(1, 2),
                      dst_layer_range=range(0, 1)))
    ccopies += slot_copies(csrc, 33, 3, cdst, 0, src_layer_range=range(1, 2), dst_layer_range=range(0, 1))
    p.verify(cdst, 34, ccopies, "pushed one layer")
    d.verify(src, 31, what="the pusher's own bytes")
    after = d.link_info(P)
    pushed, one_sided, sent = (after[k] - before[k] for k in ("bytes_pushed", "bytes_pushed_one_sided",
                                                                "data_bytes_sent"))
    assert pushed > 0, after
    if transport == "ucx":  # one-sided puts: no data on the link's connection
        assert one_sided == pushed and sent == 0, (pushed, one_sided, sent)
    else:  # streamed to the owner on the link's connection
        assert one_sided == 0 and sent == pushed, (pushed, one_sided, sent)


def test_four_decoders_pull_at_once_across_hosts(group, hosts, transport):
    a, b = hosts[0], hosts[1]
    prefill = spawn_on(a, group, "prefill", role="PROMPT", cluster_id=P, listen=True, transport=transport)
    decoders = [spawn_on(b, group, f"decode{i}", role="DECODER", cluster_id=100 + i, transport=transport,
                        **SMALL_POOL) for i in range(4)]
    start = time.monotonic() + 0.3
    rids = [(dd, dd.send("link", start_at=start, clusters=[cluster_of(prefill, ip=a.ip)], timeout=10000))
            for dd in decoders]
    for dd, rid in rids:
        ret = dd.wait(rid, 30)
        assert ret.ok and ret.result["per_cluster"] == ["LLM_SUCCESS"], ret
    src = prefill.allocate(contig(batch=4, tail=(256, 128)), keys=[req_key(P, 1000 + i) for i in range(4)])
    prefill.fill(src, 41)
    blocks = prefill.allocate_blocks(paged(64), blocks_key(P, 0))
    prefill.fill(blocks, 42)
    dsts = [dd.allocate(contig(batch=2, tail=(256, 128))) for dd in decoders]
    dblocks = [dd.allocate_blocks(paged(16)) for dd in decoders]
    for i, dd in enumerate(decoders):
        dd.fill(dsts[i], 50 + i)
        dd.fill(dblocks[i], 60 + i)
    start = time.monotonic() + 0.3
    rids = [(i, dd, dd.send("parallel", start_at=start, requests=[
        {"op": "pull_cache", "key": req_key(P, 1000 + i), "cache": dsts[i].cache_id, "batch_index": 1},
        {"op": "pull_blocks", "key": blocks_key(P, 0), "cache": dblocks[i].cache_id,
         "src_blocks": list(range(i * 16, i * 16 + 16)), "dst_blocks": list(range(16))[::-1], "repeat": 4},
    ])) for i, dd in enumerate(decoders)]
    for i, dd, rid in rids:
        reply = dd.wait(rid, 60)
        assert reply.ok, reply
        for sub in reply.result:
            assert sub["ok"], (dd.name, sub)
    for i, dd in enumerate(decoders):
        dd.verify(dsts[i], 50 + i, slot_copies(src, 41, i, dsts[i], 1), f"decoder {i}: its request")
        dd.verify(dblocks[i], 60 + i, block_copies(blocks, 42, list(range(i * 16, i * 16 + 16)), dblocks[i],
                                                   list(range(16))[::-1]), f"decoder {i}: its blocks")
        assert dd.link_info(P)["state"] == "active"


# ---- faults ------------------------------------------------------------------------------------

def _stream_blocks(group, hosts, transport, sync_kv_timeout):
    pair = start_cross_pair(group, hosts, transport, prefill_init=SMALL_POOL,
                            decode_init=dict(SMALL_POOL, sync_kv_timeout=sync_kv_timeout))
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(desc(4, [64, 16384], "DT_UINT8", "HOST"), blocks_key(P, 0))
    p.fill(src, 5)
    dst = d.allocate_blocks(desc(4, [64, 16384], "DT_UINT8", "HOST"))
    d.fill(dst, 6)
    return p, d, src, dst


def test_partition_mid_pull_times_out_and_a_relink_works_once_healed(group, hosts, transport):
    """Pulls stream back to back when the decode's veth goes down: the pull in flight ends in
    LLM_TIMEOUT at sync_kv_timeout (the peer is silent, not gone), never later; a link attempt
    while partitioned fails (the address is unreachable) within its timeout; once healed, a
    relink works and every byte is exact."""
    p, d, src, dst = _stream_blocks(group, hosts, transport, sync_kv_timeout=1000)
    rid = d.send("pull_blocks", key=blocks_key(P, 0), cache=dst.cache_id, src_blocks=list(range(0, 64, 2)),
                 dst_blocks=list(range(32)), duration_s=60)
    time.sleep(0.5)
    t_cut = hosts.partition(hosts[1])
    try:
        reply = d.wait(rid, 15)
        took = reply.t_end - t_cut
        print(f"[{transport}] {reply.raw.get('done')} pulls completed; the one in flight failed "
              f"{took * 1e3:.0f} ms after the partition (sync_kv_timeout 1000 ms)")
        expect_code(reply, TIMEOUT, what="pull in flight across a partition")
        assert reply.raw.get("done", 0) > 0, "no pull completed before the partition: the test did not stream"
        assert 0.5 <= took < 4.0, f"the pull in flight ended {took:.2f} s after the partition"
        info = d.link_info(P)
        assert info["state"] == "broken" and info["broken_reason"], info
        nxt = d.pull_blocks(blocks_key(P, 0), dst, [0], [40])
        expect_code(nxt, LINK_FAILED, what="the next call on the timed-out link")
        assert nxt.elapsed_s < 0.5 and nxt.error.get("action") == "relink", nxt.error
        # relinking while partitioned fails, within the link's own timeout at the latest
        t0 = time.monotonic()
        ret = d.link([cluster_of(p, ip=hosts[0].ip)], timeout=800)
        assert ret["per_cluster"] != ["LLM_SUCCESS"], ret
        assert time.monotonic() - t0 < 5.0
    finally:
        hosts.heal(hosts[1])
    link_across(d, p, hosts[0].ip)
    assert d.link_info(P)["state"] == "active"
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, [1, 3, 5], [40, 41, 42]))
    # blocks 0..31 may hold whatever the timed-out pull left; every other byte is exact
    partial = [[t, 0, 32 * dst.block_bytes] for t in range(dst.num_tensors)]
    d.verify(dst, 6, block_copies(src, 5, [1, 3, 5], dst, [40, 41, 42]), "after the relink", ignore=partial)


def test_killed_prefill_fails_the_pull_in_flight_fast(group, hosts, transport):
    """The prefill is frozen so that the pull is surely in flight, then SIGKILLed: its kernel
    closes the connection across the veth and the pull fails LLM_LINK_FAILED at once (the issue
    asks for 100 ms; asserted with a generous bound, the measured value printed)."""
    p, d, src, dst = _stream_blocks(group, hosts, transport, sync_kv_timeout=10000)
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, [0], [0]))  # the link works before the fault
    p.freeze()
    rid = d.send("pull_blocks", key=blocks_key(P, 0), cache=dst.cache_id, src_blocks=[1], dst_blocks=[1])
    time.sleep(0.3)
    t_kill = p.kill()
    reply = d.wait(rid, 15)
    detect = reply.t_end - t_kill
    print(f"[{transport}] pull in flight failed {detect * 1e3:.1f} ms after SIGKILL of the prefill on the other host")
    expect_code(reply, LINK_FAILED, what="pull in flight when the owner died")
    assert reply.error.get("action") == "relink", reply.error
    assert re.search("closed|died|reset|lost", reply.message, re.I), reply.message
    assert detect < 1.0, f"a killed peer on another host took {detect:.3f} s to be noticed"
    nxt = d.pull_blocks(blocks_key(P, 0), dst, [2], [2])
    expect_code(nxt, LINK_FAILED, what="next call on a dead link")
    assert nxt.elapsed_s < 0.5
    d.verify(dst, 6, block_copies(src, 5, [0], dst, [0]), "the failed pulls wrote nothing")


def test_killed_idle_prefill_breaks_the_link_fast(group, hosts, transport):
    pair = start_cross_pair(group, hosts, transport, prefill_init=SMALL_POOL, decode_init=SMALL_POOL)
    t_kill = pair.prefill.kill()
    took = wait_link_state(pair.decode, P, "broken", timeout=2.0)
    print(f"[{transport}] idle link broken {(time.monotonic() - t_kill) * 1e3:.1f} ms after SIGKILL "
          f"(polled every 20 ms; {took * 1e3:.1f} ms of polling)")


def test_rate_limited_veth_delivers_exact_bytes_and_a_slow_pull_times_out(group, hosts, transport):
    """tbf at 40 Mbit/s (5 MB/s) on both veth ends: a 1 MiB pull is slow but exact; a 16 MiB
    pull needs ~3 s, longer than the decode's sync_kv_timeout (1.5 s), and ends in LLM_TIMEOUT
    at the timeout, never a hang. The owner bounds its sending by its own sync_kv_timeout
    (at least 1 s): set far above the decode's here, so the requester's deadline is the one
    under test (an owner that gave up first would reset the link: LLM_LINK_FAILED)."""
    pool = {"pool_bytes": 40 << 20, "device_pool": False}
    pair = start_cross_pair(group, hosts, transport, prefill_init=dict(pool, sync_kv_timeout=20000),
                            decode_init=dict(pool, sync_kv_timeout=1500))
    p, d = pair.prefill, pair.decode
    block = 256 << 10
    src = p.allocate_blocks(desc(4, [16, block], "DT_UINT8", "HOST"), blocks_key(P, 0))
    p.fill(src, 7)
    dst = d.allocate_blocks(desc(4, [16, block], "DT_UINT8", "HOST"))
    d.fill(dst, 8)
    hosts.rate_limit("40mbit", burst="64kb", latency="2s")
    reply = d.ok(d.pull_blocks(blocks_key(P, 0), dst, [3], [12]))
    print(f"[{transport}] 1 MiB over a 40 Mbit/s veth in {reply.elapsed_s * 1e3:.0f} ms "
          f"({4 * block / reply.elapsed_s / 1e6:.1f} MB/s)")
    d.verify(dst, 8, block_copies(src, 7, [3], dst, [12]), "through the rate limit")
    slow = d.pull_blocks(blocks_key(P, 0), dst, list(range(16)), list(range(16)), deadline=30)
    print(f"[{transport}] 16 MiB over a 40 Mbit/s veth: {slow.code or 'ok'} after {slow.elapsed_s * 1e3:.0f} ms "
          f"(sync_kv_timeout 1500 ms)")
    expect_code(slow, TIMEOUT, what="a pull slower than sync_kv_timeout")
    assert 1.3 <= slow.elapsed_s < 5.0, slow.elapsed_s
    # once the limit is gone a relink moves the same bytes exactly
    hosts.unlimit()
    link_across(d, p, hosts[0].ip)
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, list(range(16)), list(range(16))))
    d.verify(dst, 8, block_copies(src, 7, list(range(16)), dst, list(range(16))), "after the limit was lifted")


def test_slow_pull_times_out_at_the_requesters_timeout_when_the_owners_is_shorter(group, hosts, transport):
    """The requester's sync_kv_timeout is the caller's contract; a prefill configured with a
    shorter one does not turn a slow pull into a broken link first: the request carries the
    requester's timeout, and the owner serves it at least that long."""
    pool = {"pool_bytes": 24 << 20, "device_pool": False}
    pair = start_cross_pair(group, hosts, transport, prefill_init=dict(pool, sync_kv_timeout=1000),
                            decode_init=dict(pool, sync_kv_timeout=2500))
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(desc(4, [16, 256 << 10], "DT_UINT8", "HOST"), blocks_key(P, 0))
    p.fill(src, 7)
    dst = d.allocate_blocks(desc(4, [16, 256 << 10], "DT_UINT8", "HOST"))
    hosts.rate_limit("40mbit", burst="64kb", latency="2s")
    slow = d.pull_blocks(blocks_key(P, 0), dst, list(range(16)), list(range(16)), deadline=30)
    print(f"[{transport}] 16 MiB at 5 MB/s, owner timeout 1 s, requester 2.5 s: {slow.code} after "
          f"{slow.elapsed_s * 1e3:.0f} ms: {slow.message}")
    expect_code(slow, TIMEOUT, what="the requester's deadline")
    assert slow.elapsed_s >= 2.3, slow.elapsed_s
