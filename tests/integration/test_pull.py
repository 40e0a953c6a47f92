# SPDX-License-Identifier: Apache-2.0
"""pull_cache / pull_blocks / push_cache / push_blocks between a real prefill and a real decode
process (docs/transfer.md "Pulls"), over shm and tcp, on HOST and DEVICE (the CPU device here)
placements, with pool and registered (user) memory on either side.

Every byte of every destination is checked after every transfer, the bytes outside the
destination range included (they must still hold the destination's own pattern); a failed call
must leave the destination untouched and consume nothing.

The linked pair is shared by the tests of this module (one per transport) and reset between
tests; see conftest.py.
"""
from __future__ import annotations

import pytest

from workers import (DECODE_ID, PREFILL_ID, block_copies, blocks_key, desc, expect_code, id_key, pad_key,
                     prefix_key, req_key, slot_copies, slot_to_block_copies, wait_for)

pytestmark = pytest.mark.timeout(60)

P, D = PREFILL_ID, DECODE_ID
UNLINKED = 77
PARAM_INVALID = "LLM_PARAM_INVALID"
NOT_EXIST = "LLM_KV_CACHE_NOT_EXIST"
NOT_YET_LINK = "LLM_NOT_YET_LINK"

PLACEMENTS = [("HOST", "HOST"), ("DEVICE", "DEVICE"), ("HOST", "DEVICE"), ("DEVICE", "HOST")]
PLACEMENT_IDS = ["host-host", "dev-dev", "host-dev", "dev-host"]


def contig(placement="DEVICE", num_tensors=4, batch=4, tail=(64, 128), dtype="DT_FLOAT16"):
    """4 tensors x 4 slots of 16 KiB by default."""
    return desc(num_tensors, [batch, *tail], dtype, placement)


def paged(placement="DEVICE", num_tensors=4, num_blocks=16, block=(16, 2, 64), dtype="DT_BF16"):
    """4 tensors x 16 blocks of 4 KiB by default."""
    return desc(num_tensors, [num_blocks, *block], dtype, placement)


def check_all(checks):
    """[(what, reply, code[, match])]: every check runs; the failures are reported together."""
    failures = []
    for what, reply, code, *match in checks:
        try:
            expect_code(reply, code, match=match[0] if match else None, what=what)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, f"{len(failures)} of {len(checks)} checks failed:\n" + "\n".join(failures)


# ---- pull_cache ----------------------------------------------------------------------------------

@pytest.mark.parametrize("placements", PLACEMENTS, ids=PLACEMENT_IDS)
def test_pull_cache_by_req_key_every_byte(pair, placements):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(placements[0]), keys=[req_key(P, 10 + i) for i in range(4)])
    p.fill(src, 11)
    dst = d.allocate(contig(placements[1]))
    d.fill(dst, 22)
    d.ok(d.pull_cache(req_key(P, 12), dst, batch_index=3))
    copies = slot_copies(src, 11, 2, dst, 3)
    d.verify(dst, 22, copies, "req 12 -> slot 3")
    d.ok(d.pull_cache(req_key(P, 10), dst))  # batch_index defaults to 0
    copies += slot_copies(src, 11, 0, dst, 0)
    d.verify(dst, 22, copies, "req 10 -> slot 0")
    p.verify(src, 11, what="the owner's bytes after being read")


def test_pull_cache_with_padding_keys(pair):
    """Key i binds slot i; a padding key (req_id 2**64-1) skips a slot."""
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(), keys=[pad_key(P), req_key(P, 41), pad_key(P), req_key(P, 43)])
    p.fill(src, 3)
    dst = d.allocate(contig())
    d.fill(dst, 4)
    d.ok(d.pull_cache(req_key(P, 43), dst, batch_index=1))
    d.ok(d.pull_cache(req_key(P, 41), dst, batch_index=2))
    d.verify(dst, 4, slot_copies(src, 3, 3, dst, 1) + slot_copies(src, 3, 1, dst, 2))


def test_req_key_is_consumed_by_a_complete_pull(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(), keys=[req_key(P, 2020202), req_key(P, 2020203)])
    p.fill(src, 5)
    dst = d.allocate(contig())
    d.fill(dst, 6)
    d.ok(d.pull_cache(req_key(P, 2020202), dst, batch_index=1))
    d.verify(dst, 6, slot_copies(src, 5, 0, dst, 1))
    expect_code(d.pull_cache(req_key(P, 2020202), dst, batch_index=2), NOT_EXIST, match="2020202")
    d.verify(dst, 6, slot_copies(src, 5, 0, dst, 1), "the failed pull wrote nothing")
    # the other key of the same cache is untouched by the consumption
    d.ok(d.pull_cache(req_key(P, 2020203), dst, batch_index=2))
    d.verify(dst, 6, slot_copies(src, 5, 0, dst, 1) + slot_copies(src, 5, 1, dst, 2))
    expect_code(d.pull_cache(req_key(P, 2020203), dst), NOT_EXIST, match="2020203")


def test_consumed_key_frees_the_owners_memory(pair):
    """Upstream lifetime: deallocate_cache on the owner, then the last key pulled frees it."""
    p, d = pair.prefill, pair.decode
    base = p.call("pool_stats", placement="DEVICE")["used_bytes"]
    src = p.allocate(contig(), keys=[req_key(P, 50)])
    p.fill(src, 7)
    p.call("deallocate", cache=src.cache_id)
    assert p.call("pool_stats", placement="DEVICE")["used_bytes"] > base, "the key must keep the memory"
    dst = d.allocate(contig())
    d.fill(dst, 8)
    d.ok(d.pull_cache(req_key(P, 50), dst, batch_index=3))
    d.verify(dst, 8, slot_copies(src, 7, 0, dst, 3))
    assert wait_for(lambda: p.call("pool_stats", placement="DEVICE")["used_bytes"] == base, 2.0), \
        "the consumed key did not release the deallocated cache"


def test_partial_pulls_do_not_consume(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(), keys=[req_key(P, 60)])
    p.fill(src, 9)
    dst = d.allocate(contig())
    d.fill(dst, 10)
    half = src.slot_bytes // 2
    d.ok(d.pull_cache(req_key(P, 60), dst, batch_index=1, size=half))
    copies = slot_copies(src, 9, 0, dst, 1, size=half)
    d.verify(dst, 10, copies, "half a slot")
    d.ok(d.pull_cache(req_key(P, 60), dst, batch_index=2, src_layer_range=range(1, 2),
                      dst_layer_range=range(0, 1)))
    copies += slot_copies(src, 9, 0, dst, 2, src_layer_range=range(1, 2), dst_layer_range=range(0, 1))
    d.verify(dst, 10, copies, "one layer")
    d.ok(d.pull_cache(req_key(P, 60), dst, batch_index=3))  # complete: consumes
    copies += slot_copies(src, 9, 0, dst, 3)
    d.verify(dst, 10, copies, "complete")
    expect_code(d.pull_cache(req_key(P, 60), dst), NOT_EXIST)


def test_pulls_both_ways_at_once_on_one_link(pair):
    """Both ends pull from each other at once, from two threads each, over the link's one
    connection: requests and replies of both directions interleave, and a caller waiting on its
    reply reads, and serves, whatever frame comes first (docs/transfer.md "Small pulls").
    Each thread pulls a different source slot into its own destination slot, so every byte of
    both destinations says which pull wrote it. By cache id: pulls the owner serves on every
    transport (by a prefix key, shm pulls read the owner's published table one-sided)."""
    p, d = pair.prefill, pair.decode
    src_p = p.allocate(contig(), keys=[prefix_key(P, 81), prefix_key(P, 82)])
    p.fill(src_p, 31)
    src_d = d.allocate(contig(), keys=[prefix_key(D, 83), prefix_key(D, 84)])
    d.fill(src_d, 32)
    dst_p = p.allocate(contig())
    p.fill(dst_p, 33)
    dst_d = d.allocate(contig())
    d.fill(dst_d, 34)
    rounds = 150
    sent = [(d, d.send("pull_cache", thread=True, key=id_key(P, src_p.cache_id, 0), cache=dst_d.cache_id,
                       batch_index=2, repeat=rounds)),
            (d, d.send("pull_cache", thread=True, key=id_key(P, src_p.cache_id, 1), cache=dst_d.cache_id,
                       batch_index=3, repeat=rounds)),
            (p, p.send("pull_cache", thread=True, key=id_key(D, src_d.cache_id, 0), cache=dst_p.cache_id,
                       batch_index=0, repeat=rounds)),
            (p, p.send("pull_cache", thread=True, key=id_key(D, src_d.cache_id, 1), cache=dst_p.cache_id,
                       batch_index=1, repeat=rounds))]
    for worker, rid in sent:
        reply = worker.ok(worker.wait(rid))
        assert reply.result["done"] == rounds, reply.result
    d.verify(dst_d, 34, slot_copies(src_p, 31, 0, dst_d, 2) + slot_copies(src_p, 31, 1, dst_d, 3), "pulled from P")
    p.verify(dst_p, 33, slot_copies(src_d, 32, 0, dst_p, 0) + slot_copies(src_d, 32, 1, dst_p, 1), "pulled from D")
    p.verify(src_p, 31, what="P's source after being read")
    d.verify(src_d, 32, what="D's source after being read")


def test_a_peer_request_right_after_a_burst_of_pulls_is_served_at_once(pair):
    """While this side's callers read their own replies, the link's reader thread parks off the
    connection (docs/transfer.md "Small pulls"); a request from the peer that comes right after
    a burst of pulls must still be served at once, not when this side calls next. Each pull of
    the peer is bounded well below sync_kv_timeout, so a reader that stayed parked fails it."""
    p, d = pair.prefill, pair.decode
    src_p = p.allocate(contig(), keys=[prefix_key(P, 85)])
    p.fill(src_p, 35)
    src_d = d.allocate(contig(), keys=[prefix_key(D, 86)])
    d.fill(src_d, 36)
    dst_d = d.allocate(contig())
    d.fill(dst_d, 37)
    dst_p = p.allocate(contig())
    p.fill(dst_p, 38)
    for burst in range(5):
        d.ok(d.pull_cache(id_key(P, src_p.cache_id, 0), dst_d, batch_index=1, repeat=200))
        for _ in range(3):
            reply = p.ok(p.pull_cache(id_key(D, src_d.cache_id, 0), dst_p, batch_index=2))
            assert reply.elapsed_s < 1.0, f"burst {burst}: the peer's pull took {reply.elapsed_s:.3f} s"
    d.verify(dst_d, 37, slot_copies(src_p, 35, 0, dst_d, 1), "pulled from P")
    p.verify(dst_p, 38, slot_copies(src_d, 36, 0, dst_p, 2), "pulled from D")


def test_prefix_key_is_persistent(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(), keys=[req_key(P, 70), prefix_key(P, 5353535)])
    p.fill(src, 12)
    dst = d.allocate(contig())
    d.fill(dst, 13)
    copies = []
    for slot in (0, 1, 2):
        d.ok(d.pull_cache(prefix_key(P, 5353535), dst, batch_index=slot))
        copies += slot_copies(src, 12, 1, dst, slot)
        d.verify(dst, 13, copies, f"prefix pull #{slot + 1}")
    p.call("remove_key", key=prefix_key(P, 5353535))
    expect_code(d.pull_cache(prefix_key(P, 5353535), dst, batch_index=3), NOT_EXIST, match="5353535")
    d.verify(dst, 13, copies)


@pytest.mark.parametrize("placement", ["HOST", "DEVICE"])
def test_registered_source_key_is_never_consumed(pair, placement):
    """Registered (user) memory as the source: CMA on one host (tcp when refused)."""
    p, d = pair.prefill, pair.decode
    src = p.register(contig(placement), keys=[req_key(P, 80), req_key(P, 81)])
    p.fill(src, 14)
    dst = d.allocate(contig())
    d.fill(dst, 15)
    copies = []
    for slot in (0, 1):
        d.ok(d.pull_cache(req_key(P, 81), dst, batch_index=slot))
        copies += slot_copies(src, 14, 1, dst, slot)
    d.ok(d.pull_cache(req_key(P, 80), dst, batch_index=3))
    copies += slot_copies(src, 14, 0, dst, 3)
    d.verify(dst, 15, copies, "registered source pulled three times")
    p.verify(src, 14)


@pytest.mark.parametrize("placement", ["HOST", "DEVICE"])
def test_registered_destination(pair, placement):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(), keys=[prefix_key(P, 90)])
    p.fill(src, 16)
    rsrc = p.register(contig("HOST"), keys=[prefix_key(P, 91)])
    p.fill(rsrc, 17)
    dst = d.register(contig(placement))
    d.fill(dst, 18)
    d.ok(d.pull_cache(prefix_key(P, 90), dst, batch_index=2))
    d.ok(d.pull_cache(prefix_key(P, 91), dst, batch_index=0))  # registered -> registered
    d.verify(dst, 18, slot_copies(src, 16, 0, dst, 2) + slot_copies(rsrc, 17, 0, dst, 0))


def test_pull_by_id_and_index(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig())  # no keys: reachable by (cache_id, batch_index) only
    p.fill(src, 19)
    dst = d.allocate(contig())
    d.fill(dst, 20)
    d.ok(d.pull_cache(id_key(P, src.cache_id, 3), dst, batch_index=1))
    d.ok(d.pull_cache(id_key(P, src.cache_id, 3), dst, batch_index=2))  # nothing consumed
    d.ok(d.pull_cache(id_key(P, src.cache_id, 0), dst, batch_index=0, size=1000))
    d.verify(dst, 20, slot_copies(src, 19, 3, dst, 1) + slot_copies(src, 19, 3, dst, 2)
             + slot_copies(src, 19, 0, dst, 0, size=1000))
    expect_code(d.pull_cache(id_key(P, 7575757, 0), dst), NOT_EXIST, match="7575757")
    expect_code(d.pull_cache(id_key(P, src.cache_id, 4), dst), NOT_EXIST)  # the owner has 4 slots
    d.verify(dst, 20, slot_copies(src, 19, 3, dst, 1) + slot_copies(src, 19, 3, dst, 2)
             + slot_copies(src, 19, 0, dst, 0, size=1000), "after the failed pulls")


@pytest.mark.parametrize("size", [1, 100, 4096, "slot-1", "slot"])
def test_pull_size(pair, size):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(), keys=[prefix_key(P, 100)])
    p.fill(src, 21)
    dst = d.allocate(contig())
    d.fill(dst, 22)
    n = {"slot-1": src.slot_bytes - 1, "slot": src.slot_bytes}.get(size, size)
    d.ok(d.pull_cache(prefix_key(P, 100), dst, batch_index=2, size=n))
    d.verify(dst, 22, slot_copies(src, 21, 0, dst, 2, size=n), f"size={n}")


def test_pull_layer_ranges(pair):
    """8 tensors = 4 layers of (K, V): ranges select tensors [start*N, stop*N)."""
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(num_tensors=8), keys=[prefix_key(P, 110)])
    p.fill(src, 23)
    dst = d.allocate(contig(num_tensors=8))
    d.fill(dst, 24)
    copies = []
    d.ok(d.pull_cache(prefix_key(P, 110), dst, batch_index=0, src_layer_range=range(1, 3),
                      dst_layer_range=range(0, 2)))
    copies += slot_copies(src, 23, 0, dst, 0, src_layer_range=range(1, 3), dst_layer_range=range(0, 2))
    d.verify(dst, 24, copies, "layers 1..2 -> 0..1")
    d.ok(d.pull_cache(prefix_key(P, 110), dst, batch_index=1, src_layer_range=range(1, 2),
                      dst_layer_range=range(0, 1), tensor_num_per_layer=4))
    copies += slot_copies(src, 23, 0, dst, 1, src_layer_range=range(1, 2), dst_layer_range=range(0, 1),
                          tensor_num_per_layer=4)
    d.verify(dst, 24, copies, "tensor_num_per_layer=4")
    d.ok(d.pull_cache(prefix_key(P, 110), dst, batch_index=2, src_layer_range=range(3, 4),
                      dst_layer_range=range(3, 4), size=333))
    copies += slot_copies(src, 23, 0, dst, 2, size=333, src_layer_range=range(3, 4), dst_layer_range=range(3, 4))
    d.verify(dst, 24, copies, "one layer, 333 bytes")
    d.ok(d.pull_cache(prefix_key(P, 110), dst, batch_index=3, src_layer_range=range(0, 8),
                      dst_layer_range=range(0, 8), tensor_num_per_layer=1))
    copies += slot_copies(src, 23, 0, dst, 3)
    d.verify(dst, 24, copies, "every tensor by range, N=1")


def test_large_contiguous_pull(pair):
    """32 MiB in one call (8 tensors x 4 MiB): the multi-threaded copy path."""
    p, d = pair.prefill, pair.decode
    src = p.allocate(desc(8, [1, 2048, 1024], "DT_FLOAT16", "DEVICE"), keys=[prefix_key(P, 120)])
    p.fill(src, 25)
    dst = d.allocate(desc(8, [1, 2048, 1024], "DT_FLOAT16", "DEVICE"))
    d.fill(dst, 26)
    d.ok(d.pull_cache(prefix_key(P, 120), dst, deadline=60))
    assert d.verify(dst, 26, slot_copies(src, 25, 0, dst, 0)) == 32 << 20


# ---- pull_blocks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("placements", PLACEMENTS, ids=PLACEMENT_IDS)
def test_pull_blocks_every_byte(pair, placements):
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(paged(placements[0]), blocks_key(P, 0))
    p.fill(src, 31)
    dst = d.allocate_blocks(paged(placements[1]))
    d.fill(dst, 32)
    src_blocks = [3, 7, 8, 9, 15, 0]   # a contiguous run (7, 8, 9) among single blocks
    dst_blocks = [0, 1, 2, 3, 10, 14]  # (1, 2, 3) contiguous on both sides
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, src_blocks, dst_blocks))
    copies = block_copies(src, 31, src_blocks, dst, dst_blocks)
    d.verify(dst, 32, copies, "mixed runs")
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, [12, 13], [13, 12]))  # crossed
    copies += block_copies(src, 31, [12, 13], dst, [13, 12])
    d.verify(dst, 32, copies, "crossed pair")
    p.verify(src, 31)


def test_pull_blocks_contiguous_run_and_reverse(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(paged(num_blocks=32), blocks_key(P, 1))
    p.fill(src, 33)
    dst = d.allocate_blocks(paged(num_blocks=32))
    d.fill(dst, 34)
    d.ok(d.pull_blocks(blocks_key(P, 1), dst, list(range(4, 20)), list(range(16, 32))))
    copies = block_copies(src, 33, list(range(4, 20)), dst, list(range(16, 32)))
    d.verify(dst, 34, copies, "one run of 16")
    d.ok(d.pull_blocks(blocks_key(P, 1), dst, list(range(0, 8)), list(range(15, 7, -1))))
    copies += block_copies(src, 33, list(range(0, 8)), dst, list(range(15, 7, -1)))
    d.verify(dst, 34, copies, "reversed")


def test_pull_blocks_layer_range(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(paged(num_tensors=8), blocks_key(P, 2))
    p.fill(src, 35)
    dst = d.allocate_blocks(paged(num_tensors=8))
    d.fill(dst, 36)
    d.ok(d.pull_blocks(blocks_key(P, 2), dst, [1, 2, 5], [5, 6, 0], src_layer_range=range(2, 4),
                       dst_layer_range=range(1, 3)))
    d.verify(dst, 36, block_copies(src, 35, [1, 2, 5], dst, [5, 6, 0], src_layer_range=range(2, 4),
                                   dst_layer_range=range(1, 3)))


@pytest.mark.parametrize("key_kind", ["prefix", "id_index"])
def test_pull_blocks_from_remote_contiguous(pair, key_kind):
    """Remote contiguous slot cut into local-block-sized chunks: chunk i -> dst_blocks[i]."""
    p, d = pair.prefill, pair.decode
    src = p.allocate(desc(4, [2, 16384], "DT_UINT8", "DEVICE"), keys=[pad_key(P), prefix_key(P, 130)])
    p.fill(src, 37)
    dst = d.allocate_blocks(desc(4, [16, 4096], "DT_UINT8", "DEVICE"))
    d.fill(dst, 38)
    key = prefix_key(P, 130) if key_kind == "prefix" else id_key(P, src.cache_id, 1)
    d.ok(d.pull_blocks(key, dst, [], [5, 2, 9, 3]))
    copies = slot_to_block_copies(src, 37, 1, dst, [5, 2, 9, 3])
    d.verify(dst, 38, copies, "4 chunks scattered")
    d.ok(d.pull_blocks(id_key(P, src.cache_id, 0), dst, [], [12, 13, 14, 15]))
    copies += slot_to_block_copies(src, 37, 0, dst, [12, 13, 14, 15])
    d.verify(dst, 38, copies, "4 chunks contiguous")


def test_registered_blocks_as_source_and_destination(pair):
    p, d = pair.prefill, pair.decode
    src = p.register(paged("HOST"), blocks=True, blocks_key=blocks_key(P, 3))
    p.fill(src, 39)
    dst = d.register(paged("HOST"), blocks=True)
    d.fill(dst, 40)
    d.ok(d.pull_blocks(blocks_key(P, 3), dst, [0, 1, 2, 10], [15, 14, 13, 0]))
    d.ok(d.pull_blocks(blocks_key(P, 3), dst, [0, 1, 2, 10], [4, 5, 6, 7]))  # registered: nothing consumed
    d.verify(dst, 40, block_copies(src, 39, [0, 1, 2, 10], dst, [15, 14, 13, 0])
             + block_copies(src, 39, [0, 1, 2, 10], dst, [4, 5, 6, 7]))


def test_large_blocks_pull(pair):
    """512 scattered 16 KiB blocks x 2 tensors in one call (reference case (c)'s shape)."""
    import random
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(desc(2, [1024, 16384], "DT_UINT8", "HOST"), blocks_key(P, 4))
    p.fill(src, 41)
    dst = d.allocate_blocks(desc(2, [1024, 16384], "DT_UINT8", "HOST"))
    d.fill(dst, 42)
    rng = random.Random(7)
    src_blocks = rng.sample(range(1024), 512)
    dst_blocks = rng.sample(range(1024), 512)
    d.ok(d.pull_blocks(blocks_key(P, 4), dst, src_blocks, dst_blocks, deadline=60))
    d.verify(dst, 42, block_copies(src, 41, src_blocks, dst, dst_blocks))


# ---- push --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("placements", PLACEMENTS, ids=PLACEMENT_IDS)
def test_push_cache(pair, placements):
    p, d = pair.prefill, pair.decode
    src = d.allocate(contig(placements[0]))
    d.fill(src, 51)
    dst = p.allocate(contig(placements[1]))
    p.fill(dst, 52)
    d.ok(d.push_cache(id_key(P, dst.cache_id, 2), src, src_batch_index=1))
    copies = slot_copies(src, 51, 1, dst, 2)
    p.verify(dst, 52, copies, "pushed slot 1 -> remote slot 2")
    d.ok(d.push_cache(id_key(P, dst.cache_id, 0), src, src_batch_index=3, src_layer_range=range(1, 2),
                      dst_layer_range=range(0, 1)))
    copies += slot_copies(src, 51, 3, dst, 0, src_layer_range=range(1, 2), dst_layer_range=range(0, 1))
    p.verify(dst, 52, copies, "pushed one layer")
    d.verify(src, 51, what="the pusher's own bytes")


def test_push_cache_into_registered_memory(pair):
    p, d = pair.prefill, pair.decode
    src = d.allocate(contig())
    d.fill(src, 53)
    dst = p.register(contig("HOST"))
    p.fill(dst, 54)
    d.ok(d.push_cache(id_key(P, dst.cache_id, 3), src))
    p.verify(dst, 54, slot_copies(src, 53, 0, dst, 3))


@pytest.mark.parametrize("placements", PLACEMENTS[:2], ids=PLACEMENT_IDS[:2])
def test_push_blocks(pair, placements):
    p, d = pair.prefill, pair.decode
    src = d.allocate_blocks(paged(placements[0]))
    d.fill(src, 55)
    dst = p.allocate_blocks(paged(placements[1]), blocks_key(P, 5))
    p.fill(dst, 56)
    d.ok(d.push_blocks(blocks_key(P, 5), src, [1, 2, 3, 9], [7, 8, 9, 0]))
    copies = block_copies(src, 55, [1, 2, 3, 9], dst, [7, 8, 9, 0])
    p.verify(dst, 56, copies)
    d.ok(d.push_blocks(blocks_key(P, 5), src, [4], [15], src_layer_range=range(0, 1), dst_layer_range=range(1, 2)))
    copies += block_copies(src, 55, [4], dst, [15], src_layer_range=range(0, 1), dst_layer_range=range(1, 2))
    p.verify(dst, 56, copies, "one layer")


def test_prefill_pulls_from_decode(pair):
    """Links are symmetric: the listener side pulls too."""
    p, d = pair.prefill, pair.decode
    src = d.allocate(contig(), keys=[req_key(D, 5)])
    d.fill(src, 57)
    dst = p.allocate(contig())
    p.fill(dst, 58)
    p.ok(p.pull_cache(req_key(D, 5), dst, batch_index=3))
    p.verify(dst, 58, slot_copies(src, 57, 0, dst, 3))


# ---- errors ------------------------------------------------------------------------------------------

def test_pull_cache_mismatches_are_param_invalid(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate(contig(), keys=[req_key(P, 300)])
    p.fill(src, 61)
    p.allocate(contig(num_tensors=6), keys=[req_key(P, 301)])
    p.allocate(contig(tail=(64, 256)), keys=[req_key(P, 302)])       # slot twice as large
    remote_blocks = p.allocate_blocks(paged(), blocks_key(P, 6))
    dst = d.allocate(contig())
    d.fill(dst, 62)
    local_blocks = d.allocate_blocks(paged())
    d.fill(local_blocks, 63)
    slot = src.slot_bytes
    cases = [
        ("6 remote tensors, 4 local", req_key(P, 301), dst, {}),
        ("remote slot 32 KiB, local 16 KiB, size -1", req_key(P, 302), dst, {}),
        ("size > slot", req_key(P, 300), dst, {"size": slot + 1}),
        ("size 0", req_key(P, 300), dst, {"size": 0}),
        ("size -2", req_key(P, 300), dst, {"size": -2}),
        ("batch_index == local batch", req_key(P, 300), dst, {"batch_index": 4}),
        ("layer ranges of different lengths", req_key(P, 300), dst,
         {"src_layer_range": range(0, 1), "dst_layer_range": range(0, 2)}),
        ("src layer range past the remote tensors", req_key(P, 300), dst,
         {"src_layer_range": range(1, 3), "dst_layer_range": range(0, 2)}),
        ("dst layer range past the local tensors", req_key(P, 300), dst,
         {"src_layer_range": range(0, 2), "dst_layer_range": range(1, 3)}),
        ("src range given, dst defaulting to all layers", req_key(P, 300), dst, {"src_layer_range": range(0, 1)}),
        ("range step 2", req_key(P, 300), dst, {"src_layer_range": range(0, 2, 2), "dst_layer_range": range(0, 2, 2)}),
        ("into a local blocks cache", req_key(P, 300), local_blocks, {}),
        ("from a remote blocks cache", id_key(P, remote_blocks.cache_id, 0), dst, {}),
        ("own cluster id", req_key(D, 300), dst, {}),
    ]
    check_all([(what, d.pull_cache(key, cache, **kw), PARAM_INVALID) for what, key, cache, kw in cases])
    d.verify(dst, 62, what="after every refused pull")
    d.verify(local_blocks, 63, what="after every refused pull")
    # nothing was consumed: the key still pulls, completely
    d.ok(d.pull_cache(req_key(P, 300), dst, batch_index=1))
    d.verify(dst, 62, slot_copies(src, 61, 0, dst, 1))


def test_pull_blocks_mismatches_are_param_invalid(pair):
    p, d = pair.prefill, pair.decode
    src = p.allocate_blocks(paged(), blocks_key(P, 0))
    p.fill(src, 64)
    p.allocate_blocks(paged(block=(32, 2, 64)), blocks_key(P, 1))   # 8 KiB blocks
    p.allocate_blocks(paged(num_tensors=6), blocks_key(P, 2))
    p.allocate(desc(4, [2, 16384], "DT_UINT8", "DEVICE"), keys=[prefix_key(P, 140)])  # 4 chunks of 4 KiB
    dst = d.allocate_blocks(paged())
    d.fill(dst, 65)
    local_contig = d.allocate(contig())
    d.fill(local_contig, 66)
    cases = [
        ("src/dst lists of different lengths", blocks_key(P, 0), dst, [1, 2], [1]),
        ("empty lists with a BlocksCacheKey", blocks_key(P, 0), dst, [], []),
        ("empty dst list", blocks_key(P, 0), dst, [1], []),
        ("block bytes 8 KiB vs 4 KiB", blocks_key(P, 1), dst, [0], [0]),
        ("6 remote tensors, 4 local", blocks_key(P, 2), dst, [0], [0]),
        ("dst block out of range", blocks_key(P, 0), dst, [0], [16]),
        ("src block out of range (the owner checks)", blocks_key(P, 0), dst, [16], [0]),
        ("huge src block index", blocks_key(P, 0), dst, [2**40], [0]),
        ("dst is a contiguous cache", blocks_key(P, 0), local_contig, [0], [0]),
        ("CacheKey source with src_blocks", prefix_key(P, 140), dst, [0], [0]),
        ("contiguous source: more dst blocks than chunks", prefix_key(P, 140), dst, [], [0, 1, 2, 3, 4]),
        ("contiguous source: no dst blocks", prefix_key(P, 140), dst, [], []),
        ("own cluster id", blocks_key(D, 0), dst, [0], [0]),
    ]
    checks = [(what, d.pull_blocks(key, cache, s, t), PARAM_INVALID) for what, key, cache, s, t in cases]
    checks.append(("layer ranges of different lengths", d.pull_blocks(
        blocks_key(P, 0), dst, [0], [0], src_layer_range=range(0, 1), dst_layer_range=range(0, 2)), PARAM_INVALID))
    check_all(checks)
    d.verify(dst, 65, what="after every refused pull")
    d.verify(local_contig, 66, what="after every refused pull")
    d.ok(d.pull_blocks(blocks_key(P, 0), dst, [1], [2]))
    d.verify(dst, 65, block_copies(src, 64, [1], dst, [2]))


def test_push_mismatches(pair):
    p, d = pair.prefill, pair.decode
    remote = p.allocate(contig())
    p.fill(remote, 71)
    remote_blocks = p.allocate_blocks(paged(), blocks_key(P, 7))
    p.fill(remote_blocks, 72)
    src = d.allocate(contig())
    src6 = d.allocate(contig(num_tensors=6))
    src_big = d.allocate(contig(tail=(64, 256)))
    src_blocks = d.allocate_blocks(paged())
    src_blocks_big = d.allocate_blocks(paged(block=(32, 2, 64)))
    for c, seed in ((src, 73), (src6, 74), (src_big, 75), (src_blocks, 76), (src_blocks_big, 77)):
        d.fill(c, seed)
    rid = remote.cache_id
    checks = [(what, reply, PARAM_INVALID) for what, reply in [
        ("src_batch_index == local batch", d.push_cache(id_key(P, rid, 0), src, src_batch_index=4)),
        ("6 local tensors, 4 remote", d.push_cache(id_key(P, rid, 0), src6)),
        ("slot bytes differ", d.push_cache(id_key(P, rid, 0), src_big)),
        ("layer ranges of different lengths", d.push_cache(id_key(P, rid, 0), src, src_layer_range=range(0, 1),
                                                           dst_layer_range=range(0, 2))),
        ("push into a remote blocks cache", d.push_cache(id_key(P, remote_blocks.cache_id, 0), src)),
        ("own cluster id", d.push_cache(id_key(D, src.cache_id, 1), src)),
        ("blocks: lists of different lengths", d.push_blocks(blocks_key(P, 7), src_blocks, [0, 1], [0])),
        ("blocks: empty lists", d.push_blocks(blocks_key(P, 7), src_blocks, [], [])),
        ("blocks: block bytes differ", d.push_blocks(blocks_key(P, 7), src_blocks_big, [0], [0])),
        ("blocks: remote block out of range", d.push_blocks(blocks_key(P, 7), src_blocks, [0], [16])),
        ("blocks: local block out of range", d.push_blocks(blocks_key(P, 7), src_blocks, [16], [0])),
        ("blocks: source is contiguous", d.push_blocks(blocks_key(P, 7), src, [0], [0])),
        ("blocks: own cluster id", d.push_blocks(blocks_key(D, 7), src_blocks, [0], [0])),
    ]]
    checks += [("remote batch index 4 of 4", d.push_cache(id_key(P, rid, 4), src), NOT_EXIST),
               ("unknown remote cache id", d.push_cache(id_key(P, 8686868, 0), src), NOT_EXIST, "8686868"),
               ("unknown remote blocks key", d.push_blocks(blocks_key(P, 9191919), src_blocks, [0], [0]), NOT_EXIST,
                "9191919")]
    check_all(checks)
    p.verify(remote, 71, what="after every refused push")
    p.verify(remote_blocks, 72, what="after every refused push")


def test_not_yet_link(pair):
    d = pair.decode
    dst = d.allocate(contig())
    blocks = d.allocate_blocks(paged())
    d.fill(dst, 81)
    d.fill(blocks, 82)
    expect_code(d.pull_cache(req_key(UNLINKED, 1), dst), NOT_YET_LINK)
    expect_code(d.pull_cache(id_key(UNLINKED, 1, 0), dst), NOT_YET_LINK)
    expect_code(d.pull_blocks(blocks_key(UNLINKED, 0), blocks, [0], [0]), NOT_YET_LINK)
    expect_code(d.pull_blocks(req_key(UNLINKED, 1), blocks, [], [0]), NOT_YET_LINK)
    expect_code(d.push_cache(id_key(UNLINKED, 1, 0), dst), NOT_YET_LINK)
    expect_code(d.push_blocks(blocks_key(UNLINKED, 0), blocks, [0], [0]), NOT_YET_LINK)
    d.verify(dst, 81)
    d.verify(blocks, 82)


def test_kv_cache_not_exist_names_the_key(pair):
    p, d = pair.prefill, pair.decode
    p.allocate(contig(), keys=[req_key(P, 1)])
    p.allocate_blocks(paged(), blocks_key(P, 0))
    dst = d.allocate(contig())
    blocks = d.allocate_blocks(paged())
    d.fill(dst, 83)
    d.fill(blocks, 84)
    expect_code(d.pull_cache(req_key(P, 4242424), dst), NOT_EXIST, match="4242424")
    expect_code(d.pull_cache(req_key(P, 1, model_id=3), dst), NOT_EXIST, match="model_id")
    expect_code(d.pull_cache(prefix_key(P, 5151515), dst), NOT_EXIST, match="5151515")
    expect_code(d.pull_blocks(blocks_key(P, 6464646), blocks, [0], [0]), NOT_EXIST, match="6464646")
    expect_code(d.pull_blocks(req_key(P, 4343434), blocks, [], [0]), NOT_EXIST, match="4343434")
    d.verify(dst, 83)
    d.verify(blocks, 84)


def test_local_cache_that_no_longer_exists(pair):
    p, d = pair.prefill, pair.decode
    p.allocate(contig(), keys=[prefix_key(P, 150)])
    p.allocate_blocks(paged(), blocks_key(P, 0))
    gone = d.allocate(contig())
    d.call("deallocate", cache=gone.cache_id)
    expect_code(d.pull_cache(prefix_key(P, 150), gone), NOT_EXIST)
    gone_blocks = d.allocate_blocks(paged())
    d.call("deallocate", cache=gone_blocks.cache_id)
    expect_code(d.pull_blocks(blocks_key(P, 0), gone_blocks, [0], [0]), NOT_EXIST)
