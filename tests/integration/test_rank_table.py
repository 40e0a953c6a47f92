# SPDX-License-Identifier: Apache-2.0
"""Rank-table links between real processes, the way vllm-ascend, MindIE and omni-infer use them:
every member calls link(comm_name, {cluster: rank}, rank_table) with the same arguments, polls
query_register_mem_status until OK, pulls blocks (every byte checked), then unlinks. Over shm
and tcp; members that start late; three members; two comms sharing one pair's link."""
from __future__ import annotations

import json
import time

import pytest

from workers import LOOPBACK, block_copies, blocks_key, desc, expect_code, free_port

pytestmark = pytest.mark.timeout(90)


def rank_table(ports):
    """Version 1.0 HCCL rank table: rank i on 127.0.0.1, device i, port ports[i]."""
    devices = [{"device_id": str(i), "device_ip": LOOPBACK, "rank_id": str(i), "device_port": str(p)}
               for i, p in enumerate(ports)]
    return json.dumps({"version": "1.0", "server_count": "1", "status": "completed",
                       "server_list": [{"server_id": LOOPBACK, "device": devices}]})


def paged(num_blocks=16):
    return desc(4, [num_blocks, 16, 2, 64], "DT_BF16", "HOST")


def link(worker, name, ranks, table):
    return worker.exec(f"result = dd.link({name!r}, {ranks!r}, {table!r})")


def status(worker, comm_id):
    return worker.exec(f"result = dd.query_register_mem_status({comm_id}).name")


def wait_ok(worker, comm_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = status(worker, comm_id)
        if seen != "PREPARING":
            break
        time.sleep(0.05)
    assert seen == "OK", (seen, worker.exec(f"result = dd.comm_info({comm_id})['error']"))


def unlink(worker, comm_id):
    worker.exec(f"dd.unlink({comm_id})")


@pytest.fixture
def members(spawn, transport):
    """Three workers (clusters 1, 2, 3), none listening: link() decides who does."""
    return [spawn(f"member{c}", role="PROMPT" if c == 1 else "DECODER", cluster_id=c, listen=False,
                  transport=transport) for c in (1, 2, 3)]


def test_two_members_link_pull_both_ways_and_unlink(members, transport):
    p, d = members[0], members[1]
    table = rank_table([free_port(), free_port()])
    src = p.allocate_blocks(paged(), blocks_key(1, 0))
    p.fill(src, 11)
    dst = d.allocate_blocks(paged())
    d.fill(dst, 12)
    d_src = d.allocate_blocks(paged(), blocks_key(2, 5))
    d.fill(d_src, 13)
    p_dst = p.allocate_blocks(paged())
    p.fill(p_dst, 14)
    # Decode first: it retries until the prefill (rank 0) listens.
    cid_d = link(d, "pd_comm_a", {1: 0, 2: 1}, table)
    time.sleep(0.3)
    cid_p = link(p, "pd_comm_a", {1: 0, 2: 1}, table)
    wait_ok(d, cid_d)
    wait_ok(p, cid_p)
    assert d.link_info(1)["transport"] == transport
    d.ok(d.pull_blocks(blocks_key(1, 0), dst, [3, 4, 5, 15], [0, 1, 2, 9]))
    d.verify(dst, 12, block_copies(src, 11, [3, 4, 5, 15], dst, [0, 1, 2, 9]), "rank 1 pulls from rank 0")
    p.ok(p.pull_blocks(blocks_key(2, 5), p_dst, [7], [8]))  # links are symmetric
    p.verify(p_dst, 14, block_copies(d_src, 13, [7], p_dst, [8]), "rank 0 pulls from rank 1")
    unlink(d, cid_d)
    unlink(p, cid_p)  # the link is already gone from the decode's unlink: still fine
    expect_code(d.pull_blocks(blocks_key(1, 0), dst, [1], [1]), "LLM_NOT_YET_LINK")
    for w, cid in ((d, cid_d), (p, cid_p)):
        with pytest.raises(Exception, match="is not linked"):
            status(w, cid)


def test_three_members_every_pair_linked(members):
    table = rank_table([free_port(), free_port(), free_port()])
    ranks = {1: 0, 2: 1, 3: 2}
    srcs = []
    for c, w in zip((1, 2, 3), members):
        s = w.allocate_blocks(paged(), blocks_key(c, 0))
        w.fill(s, 20 + c)
        srcs.append(s)
    ids = [link(w, "trio", ranks, table) for w in reversed(members)]  # highest rank first
    for w, cid in zip(reversed(members), ids):
        wait_ok(w, cid)
    for c, w in zip((1, 2, 3), members):
        for other, s in zip((1, 2, 3), srcs):
            if other == c:
                continue
            dst = w.allocate_blocks(paged())
            w.fill(dst, 40 + c)
            w.ok(w.pull_blocks(blocks_key(other, 0), dst, [2, 9], [9, 2]))
            w.verify(dst, 40 + c, block_copies(s, 20 + other, [2, 9], dst, [9, 2]), f"{c} <- {other}")
    for w, cid in zip(reversed(members), ids):
        unlink(w, cid)


def test_two_comms_share_a_pair_link_until_the_last_unlink(members):
    p, d = members[0], members[1]
    port_p, port_d = free_port(), free_port()
    table = rank_table([port_p, port_d])
    src = p.allocate_blocks(paged(), blocks_key(1, 0))
    p.fill(src, 51)
    dst = d.allocate_blocks(paged())
    d.fill(dst, 52)
    first = [link(w, "shared_1", {1: 0, 2: 1}, table) for w in (p, d)]
    second = [link(w, "shared_2", {1: 0, 2: 1}, table) for w in (p, d)]
    for w, cid in zip((p, d, p, d), first + second):
        wait_ok(w, cid)
    unlink(d, first[1])
    unlink(p, first[0])
    d.ok(d.pull_blocks(blocks_key(1, 0), dst, [6], [7]))  # the second comm still holds the link
    d.verify(dst, 52, block_copies(src, 51, [6], dst, [7]), "after the first comm's unlink")
    unlink(d, second[1])
    unlink(p, second[0])
    expect_code(d.pull_blocks(blocks_key(1, 0), dst, [6], [7]), "LLM_NOT_YET_LINK")


def test_finalize_with_a_comm_still_preparing_returns_promptly(spawn):
    lone = spawn("lone", role="DECODER", cluster_id=2, listen=False)
    table = rank_table([free_port(), free_port()])
    cid = link(lone, "never", {1: 0, 2: 1}, table)  # rank 0 never comes
    assert status(lone, cid) == "PREPARING"
    t0 = time.monotonic()
    lone.exec("dd.finalize()")
    assert time.monotonic() - t0 < 10.0


def test_a_peer_that_links_and_unlinks_between_two_polls_still_linked(members):
    """The listening rank learns of a link from the link count, not only from a live link: a
    higher rank that links and unlinks again within one poll (50 ms) must not leave it FAILED."""
    p, d = members[0], members[1]
    port_p = free_port()
    table = rank_table([port_p, free_port()])
    cid_p = link(p, "blink", {1: 0, 2: 1}, table)   # rank 0: listening once link() returns
    # Rank 1 through the cluster API, link and unlink in one step: a few ms, inside one poll.
    codes = d.exec(
        "info = ld.LLMClusterInfo(); info.remote_cluster_id = 1; "
        f"info.append_remote_ip_info({LOOPBACK!r}, {port_p}); "
        "linked = dd.link_clusters([info], 3000); unlinked = dd.unlink_clusters([info], 3000); "
        "result = [linked[0].name, [s.name for s in linked[1]], unlinked[0].name]")
    assert codes == ["LLM_SUCCESS", ["LLM_SUCCESS"], "LLM_SUCCESS"], codes
    wait_ok(p, cid_p, timeout=5.0)
    unlink(p, cid_p)
