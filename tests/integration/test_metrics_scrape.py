# SPDX-License-Identifier: Apache-2.0
"""Metrics an operator reads from running processes (llm_datadist/metrics.py): the Prometheus
endpoint a decode process serves (LLMDD_METRICS_PORT), scraped over HTTP while it pulls, and
`llm-datadist top` against a prefill's snapshot socket (LLMDD_METRICS_SOCKET), driven through a
pseudo-terminal. Real processes, real sockets, real pools; every pulled byte is verified."""
from __future__ import annotations

import os
import sys
import urllib.request
from typing import Dict, Tuple

import pytest

from workers import (DECODE_ID, PREFILL_ID, block_copies, blocks_key, cluster_of, desc, free_port, prefix_key,
                     slot_copies)

PULLS = 12
NUM_TENSORS, SHAPE = 2, [2, 8, 16]  # fp16: 256 bytes a slot of each tensor


def _scrape(port: int) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples, name: str, **labels: str) -> float:
    want = tuple(sorted(labels.items()))
    return samples.get((name, want), 0.0)


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_prometheus_endpoint_counts_pulls_and_errors(spawn, transport: str) -> None:
    pytest.importorskip("prometheus_client", reason="the Prometheus endpoint needs prometheus_client "
                                                    "(pip install 'llm-datadist[metrics]')")
    port = free_port()
    prefill = spawn("prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True, transport=transport)
    decode = spawn("decode", env={"LLMDD_METRICS_PORT": str(port)}, role="DECODER", cluster_id=DECODE_ID,
                   transport=transport)
    decode.link([cluster_of(prefill)])
    src = prefill.allocate(desc(NUM_TENSORS, SHAPE), keys=[prefix_key(PREFILL_ID, 77)])
    prefill.fill(src, 5)
    dst = decode.allocate(desc(NUM_TENSORS, SHAPE))
    peer = dict(cluster=str(DECODE_ID), peer=str(PREFILL_ID), kind="pull_cache")
    assert _value(_scrape(port), "llmdd_operations_total", **peer) == 0

    # Scraped while the pulls run: the counters only grow, and never pass what was pulled.
    rids = [decode.send("pull_cache", key=prefix_key(PREFILL_ID, 77), cache=dst.cache_id, batch_index=i % 2)
            for i in range(PULLS)]
    moved = NUM_TENSORS * src.slot_bytes
    last = 0.0
    for _ in range(3):
        now = _value(_scrape(port), "llmdd_bytes_total", **peer)
        assert last <= now <= PULLS * moved, (last, now)
        last = now
    for rid in rids:
        decode.ok(decode.wait(rid))
    decode.verify(dst, None, slot_copies(src, 5, 0, dst, 0) + slot_copies(src, 5, 0, dst, 1), "after the pulls")
    decode.expect_error("LLM_KV_CACHE_NOT_EXIST", "pull_cache", key=prefix_key(PREFILL_ID, 31337), cache=dst.cache_id)

    samples = _scrape(port)
    assert _value(samples, "llmdd_bytes_total", **peer) == PULLS * moved
    assert _value(samples, "llmdd_operations_total", **peer) == PULLS
    assert _value(samples, "llmdd_latency_seconds_count", **peer) == PULLS
    assert _value(samples, "llmdd_latency_seconds_bucket", le="+Inf", **peer) == PULLS
    assert 0 < _value(samples, "llmdd_latency_seconds_sum", **peer) < 60 * PULLS
    assert _value(samples, "llmdd_errors_total", code="LLM_KV_CACHE_NOT_EXIST", **peer) == 1
    assert _value(samples, "llmdd_link_info", cluster=str(DECODE_ID), peer=str(PREFILL_ID), transport=transport,
                  channel="unix" if transport == "shm" else "tcp", state="active") == 1
    assert _value(samples, "llmdd_link_events_total", cluster=str(DECODE_ID), event="up") == 1
    assert _value(samples, "llmdd_pool_capacity_bytes", cluster=str(DECODE_ID), pool="device") > 0
    assert _value(samples, "llmdd_pool_used_bytes", cluster=str(DECODE_ID), pool="device") >= moved
    # the link_info counters are the same numbers
    info = decode.link_info(PREFILL_ID)
    assert (info["pulls"], info["bytes_pulled"], info["errors"]) == (PULLS, PULLS * moved, 1), info

    # The owner's side of the same pulls, from its snapshot: over tcp every request served; on
    # shm the prefix key is resolved through the owner's published table and read one-sided, so
    # the owner serves none of them. The refused one (an unpublished key goes two-sided) is
    # counted with its code either way.
    owner = prefill.exec("result = dd.metrics()")
    served = owner["links"][str(DECODE_ID)]["kinds"]["serve_pull"]  # (JSON from the worker: string keys)
    assert served["operations"] == (PULLS if transport == "tcp" else 0), served
    assert served["errors_by_code"] == {"LLM_KV_CACHE_NOT_EXIST": 1}, served
    assert served["bytes"] == (PULLS * moved if transport == "tcp" else 0), served


def _top_frame_rows(text: str) -> Dict[str, list]:
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] == str(DECODE_ID) and parts[3] in ("serve_pull", "pull_cache"):
            rows[parts[3]] = parts
    return rows


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_top_shows_a_running_prefills_links_and_rates(spawn, transport: str, tmp_path) -> None:
    pexpect = pytest.importorskip("pexpect", reason="the pseudo-terminal test needs pexpect")
    sock = str(tmp_path / "prefill.sock")
    prefill = spawn("prefill", env={"LLMDD_METRICS_SOCKET": sock}, role="PROMPT", cluster_id=PREFILL_ID,
                    listen=True, transport=transport)
    decode = spawn("decode", role="DECODER", cluster_id=DECODE_ID, transport=transport)
    decode.link([cluster_of(prefill)])
    src = prefill.allocate(desc(NUM_TENSORS, SHAPE), keys=[prefix_key(PREFILL_ID, 78)])
    prefill.fill(src, 6)
    dst = decode.allocate(desc(NUM_TENSORS, SHAPE))
    assert (os.stat(sock).st_mode & 0o777) == 0o600
    # The decode pulls for a while (on a worker thread, so that it keeps pulling while top runs),
    # by cache id: a pull the owner serves on either transport (by the prefix key, shm pulls would
    # read the owner's published table one-sided, and it would serve nothing).
    loop = decode.send("exec", thread=True, code=(
        "import time\n"
        f"key = ld.CacheKeyByIdAndIndex(1, {src.cache_id}, 0)\n"
        "n, end = 0, time.monotonic() + 8\n"
        "while time.monotonic() < end:\n"
        f"    cm.pull_cache(key, caches[{dst.cache_id}], batch_index=0)\n"
        "    n += 1\n"
        "result = n\n"))
    child = pexpect.spawn(sys.executable, ["-m", "llm_datadist.cli", "top", "--socket", sock, "--interval", "0.5",
                                           "--count", "6"], env=dict(os.environ), encoding="utf-8", timeout=30,
                          dimensions=(40, 120))
    try:
        child.expect(pexpect.EOF)
        screen = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, screen
    # A terminal gets frames that each start with home + clear; after the first, with rates.
    frames = [f for f in screen.split("\x1b[H\x1b[2J") if f.strip()]
    assert len(frames) == 6, screen
    assert "(rates over" not in frames[0] and all("rates over" in f for f in frames[1:]), screen
    rows = [_top_frame_rows(f).get("serve_pull") for f in frames[1:]]
    live = [r for r in rows if r is not None and r[4] != "-" and float(r[4]) > 0]
    assert live, f"no frame shows the link to the decode with a serve_pull rate:\n{screen}"
    assert all(r[1] == transport and r[2] == "active" for r in live), live
    if transport == "tcp":  # streamed: the owner sent the bytes (shm: read one-sided, no bytes sent)
        assert any(float(r[5]) > 0 for r in live), live
    assert "links 1 (up 1, broken 0, closed 0)" in frames[-1], frames[-1]
    n = decode.ok(decode.wait(loop, deadline=30)).result
    assert n > 0
    decode.verify(dst, None, slot_copies(src, 6, 0, dst, 0), "after the pulls")


def _kinds(snapshot, peer):
    return snapshot["links"][str(peer)]["kinds"]  # (JSON from the worker: string keys)


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_snapshot_counts_every_kind_exactly(spawn, transport: str) -> None:
    prefill = spawn("prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True, transport=transport)
    decode = spawn("decode", role="DECODER", cluster_id=DECODE_ID, transport=transport)
    decode.link([cluster_of(prefill)])
    blocks_desc = desc(2, [8, 4, 32])  # 256-byte blocks
    p_blocks = prefill.allocate_blocks(blocks_desc, blocks_key(PREFILL_ID))
    prefill.fill(p_blocks, 11)
    d_blocks = decode.allocate_blocks(blocks_desc)
    decode.fill(d_blocks, 12)
    src = prefill.allocate(desc(NUM_TENSORS, SHAPE), keys=[prefix_key(PREFILL_ID, 79)])
    prefill.fill(src, 13)
    dst = decode.allocate(desc(NUM_TENSORS, SHAPE))
    block_bytes = blocks_desc["shape"][1] * blocks_desc["shape"][2] * 2

    for _ in range(3):
        decode.ok(decode.pull_cache(prefix_key(PREFILL_ID, 79), dst, batch_index=1))
    for _ in range(4):
        decode.ok(decode.pull_blocks(blocks_key(PREFILL_ID), d_blocks, src_blocks=[0, 1], dst_blocks=[2, 3]))
    for _ in range(5):
        decode.ok(decode.push_blocks(blocks_key(PREFILL_ID), d_blocks, src_blocks=[5], dst_blocks=[6]))
    decode.expect_error("LLM_PARAM_INVALID", "pull_blocks", key=blocks_key(PREFILL_ID), cache=d_blocks.cache_id,
                        src_blocks=[99], dst_blocks=[0])
    decode.verify(d_blocks, 12, block_copies(p_blocks, 11, [0, 1], d_blocks, [2, 3]), "after the pulls")
    prefill.verify(p_blocks, 11, block_copies(d_blocks, 12, [5], p_blocks, [6]), "after the pushes")

    snap = decode.exec("result = dd.metrics()")
    kinds = _kinds(snap, PREFILL_ID)
    assert (kinds["pull_cache"]["operations"], kinds["pull_cache"]["bytes"]) == (3, 3 * NUM_TENSORS * src.slot_bytes)
    assert (kinds["pull_blocks"]["operations"], kinds["pull_blocks"]["bytes"]) == (4, 4 * 2 * 2 * block_bytes)
    assert kinds["pull_blocks"]["errors_by_code"] == {"LLM_PARAM_INVALID": 1}, kinds["pull_blocks"]
    assert (kinds["push_blocks"]["operations"], kinds["push_blocks"]["bytes"]) == (5, 5 * 2 * block_bytes)
    for kind, n in (("pull_cache", 3), ("pull_blocks", 4), ("push_blocks", 5)):
        assert sum(kinds[kind]["latency_buckets"]) == n and kinds[kind]["latency_ns_sum"] > 0, kinds[kind]
        assert snap["totals"][kind]["operations"] == n
    assert kinds["push_cache"]["operations"] == 0 and kinds["serve_pull"]["operations"] == 0
    assert snap["links_up"] == 1 and snap["links"][str(PREFILL_ID)]["transport"] == transport

    owner = _kinds(prefill.exec("result = dd.metrics()"), DECODE_ID)
    assert (owner["serve_push"]["operations"], owner["serve_push"]["bytes"]) == (5, 5 * 2 * block_bytes)
    # pull_blocks by BlocksCacheKey and pull_cache by a prefix key over shm read the owner's
    # published table: no request to serve
    assert owner["serve_pull"]["operations"] == (3 + 4 if transport == "tcp" else 0), owner["serve_pull"]

    decode.unlink([cluster_of(prefill)])
    after = decode.exec("result = dd.metrics()")
    assert after["links"] == {} and (after["links_up"], after["links_closed"], after["links_broken"]) == (1, 1, 0)
    assert after["totals"]["pull_blocks"]["operations"] == 4  # the totals outlive the link


def test_metrics_off_in_both_processes(spawn) -> None:
    off = {"llmdd.Metrics": "0"}
    prefill = spawn("prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True, options=off)
    decode = spawn("decode", env={"LLMDD_METRICS": "0"}, role="DECODER", cluster_id=DECODE_ID)
    decode.link([cluster_of(prefill)])
    src = prefill.allocate(desc(NUM_TENSORS, SHAPE), keys=[prefix_key(PREFILL_ID, 80)])
    prefill.fill(src, 14)
    dst = decode.allocate(desc(NUM_TENSORS, SHAPE))
    for _ in range(3):
        decode.ok(decode.pull_cache(prefix_key(PREFILL_ID, 80), dst, batch_index=0))
    decode.verify(dst, None, slot_copies(src, 14, 0, dst, 0), "after the pulls")
    for worker, peer in ((decode, PREFILL_ID), (prefill, DECODE_ID)):
        snap = worker.exec("result = dd.metrics()")
        assert snap["enabled"] is False and snap["links_up"] == 0
        for part in (snap["totals"], _kinds(snap, peer)):
            assert all(k["operations"] == 0 and k["bytes"] == 0 and k["errors"] == 0 for k in part.values()), part
        info = worker.link_info(peer)
        assert (info["pulls"], info["bytes_pulled"], info["bytes_served"]) == (0, 0, 0), info
