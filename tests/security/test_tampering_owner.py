# SPDX-License-Identifier: Apache-2.0
"""Issue 10, item 3: an owner (prefill) that tampers with the memory it shares must not crash
the decodes reading it. The test plays the tampering owner from outside, through
/proc/<prefill pid>/fd (same uid, as a compromised or buggy owner process would)."""
from __future__ import annotations

import errno
import mmap
import os
import struct

import pytest

from workers import (Worker, WorkerGroup, block_copies, blocks_key, cluster_of, desc, prefix_key,
                     slot_copies)

P, D = 1, 2
BLOCKS = desc(2, [8, 4, 64], placement="HOST")  # 8 blocks of 512 bytes per tensor
TABLE_HEADER = struct.Struct("<IIQQII")          # magic, version, seq, bytes used, entries, reserved
# model id, prefix id, cache id, stride, num blocks, tensors, slot, location, region, key kind
TABLE_ENTRY = struct.Struct("<QQqQQIIBBB5x")
NUM_BLOCKS_AT, SLOT_AT = 32, 44  # byte offsets in an entry


def _shm_pair(group: WorkerGroup):
    p = group.spawn("prefill", role="PROMPT", cluster_id=P, listen=True, pool_bytes=16 << 20, device_pool=False)
    src = p.allocate(BLOCKS, blocks=True, blocks_key=blocks_key(P))
    p.fill(src, 21)
    d = group.spawn("decode", role="DECODER", cluster_id=D, pool_bytes=16 << 20, device_pool=False)
    d.link_to(p)
    assert d.link_info(P)["transport"] == "shm", d.link_info(P)
    dst = d.allocate(BLOCKS, blocks=True)
    d.fill(dst, 4)
    return p, d, src, dst


def _memfds(pid: int):
    """{memfd name: /proc path} of the process's shared memfds."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(path)
        except OSError:
            continue
        if target.startswith("/memfd:llmdd-"):
            out[target[len("/memfd:"):].split(" ")[0]] = path
    return out


def _pull_ok(d: Worker, src, dst, src_blocks=(1, 5), dst_blocks=(0, 3)):
    d.fill(dst, 4)
    d.ok(d.pull_blocks(blocks_key(P), dst, list(src_blocks), list(dst_blocks)))
    d.verify(dst, 4, block_copies(src, 21, list(src_blocks), dst, list(dst_blocks)))


@pytest.mark.parametrize("which", ["llmdd-host-pool", "llmdd-cache-table"])
def test_shared_memfds_cannot_be_shrunk_or_grown(group, which):
    p, d, src, dst = _shm_pair(group)
    _pull_ok(d, src, dst)
    fds = _memfds(p.pid)
    assert which in fds, fds
    fd = os.open(fds[which], os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        for new_size in (0, size // 2, size + 4096):
            with pytest.raises(OSError) as info:
                os.ftruncate(fd, new_size)
            assert info.value.errno == errno.EPERM, info.value
        assert os.fstat(fd).st_size == size
    finally:
        os.close(fd)
    _pull_ok(d, src, dst, (2, 7), (1, 6))
    assert d.alive and p.alive


def test_a_table_entry_with_a_huge_block_count_is_not_read_past_the_pool(group):
    """The owner publishes num_blocks = 2^64-1; a decode asking for block 2^52-1 (or any block past
    the pool) gets an error and stays alive: its offset wraps 64 bits or leaves the mapping."""
    p, d, src, dst = _shm_pair(group)
    _pull_ok(d, src, dst)
    path = _memfds(p.pid)["llmdd-cache-table"]
    fd = os.open(path, os.O_RDWR)
    try:
        table = mmap.mmap(fd, os.fstat(fd).st_size)
        magic, version, seq, used, count, _ = TABLE_HEADER.unpack_from(table, 0)
        assert count >= 1 and seq % 2 == 0
        entry = TABLE_ENTRY.unpack_from(table, TABLE_HEADER.size)
        assert entry[0] == 0 and entry[3] == 512 and entry[9] == 0, entry  # blocks key, model id 0, 512-byte blocks
        struct.pack_into("<Q", table, TABLE_HEADER.size + NUM_BLOCKS_AT, 2**64 - 1)  # num_blocks
        table.close()
    finally:
        os.close(fd)
    d.fill(dst, 4)
    for block in (2**52 - 1, 2**55, 2**40, 2**20):  # all past the 16 MiB pool (a block inside it is the owner's to show)
        reply = d.pull_blocks(blocks_key(P), dst, [block], [0])
        assert not reply.ok and reply.code in ("LLM_LINK_FAILED", "LLM_PARAM_INVALID"), (block, reply)
        assert d.alive, d.stderr_text()
        if reply.code == "LLM_LINK_FAILED":  # the owner lied: the link is broken, relink
            d.unlink([cluster_of(p)])
            d.link_to(p)
    d.verify(dst, 4, what="nothing was written by the refused pulls")
    assert p.alive


def test_a_prefix_entry_naming_a_slot_past_its_cache_is_not_read_past_the_pool(group):
    """A pull_cache by a prefix key reads the owner's published table one-sided on shm. The owner
    rewrites the key's slot to 2^32-1 (far past the 16 MiB pool): the decode refuses to read it,
    breaks the link (the owner lied about its memory) and stays alive; relinked, with the slot
    put back, the same pull moves every byte."""
    p, d, _, _ = _shm_pair(group)
    contig = desc(2, [2, 1024], placement="HOST")
    src = p.allocate(contig, keys=[prefix_key(P, 7)])
    p.fill(src, 5)
    dst = d.allocate(contig)
    d.fill(dst, 4)
    d.ok(d.pull_cache(prefix_key(P, 7), dst, batch_index=1))
    expected = slot_copies(src, 5, 0, dst, 1)
    d.verify(dst, 4, expected)
    assert p.exec("result = dd.metrics()")["links"][str(D)]["kinds"]["serve_pull"]["operations"] == 0
    path = _memfds(p.pid)["llmdd-cache-table"]
    fd = os.open(path, os.O_RDWR)
    try:
        table = mmap.mmap(fd, os.fstat(fd).st_size)
        _, _, seq, used, count, _ = TABLE_HEADER.unpack_from(table, 0)
        pos, found = TABLE_HEADER.size, None
        for _ in range(count):
            entry = TABLE_ENTRY.unpack_from(table, pos)
            if entry[9] == 1 and entry[1] == 7 and entry[6] != 0xFF:  # the live prefix record of key 7
                found = pos
            pos += TABLE_ENTRY.size + 8 * entry[5]
        assert found is not None, "the prefix key is not in the owner's table"
        struct.pack_into("<I", table, found + SLOT_AT, 2**32 - 1)
        reply = d.pull_cache(prefix_key(P, 7), dst, batch_index=0)
        assert not reply.ok and reply.code == "LLM_LINK_FAILED", reply
        assert d.alive, d.stderr_text()
        d.verify(dst, 4, expected, what="nothing was written by the refused pull")
        struct.pack_into("<I", table, found + SLOT_AT, 0)
        table.close()
    finally:
        os.close(fd)
    d.unlink([cluster_of(p)])
    d.link_to(p)
    d.ok(d.pull_cache(prefix_key(P, 7), dst, batch_index=0))
    d.verify(dst, 4, expected + slot_copies(src, 5, 0, dst, 0))
    assert p.alive
