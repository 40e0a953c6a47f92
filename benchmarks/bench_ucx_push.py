# SPDX-License-Identifier: Apache-2.0
"""Pushes over ucx (one-sided UCX puts, protocol 6) beside pushes streamed on the link's
connection, in the same run.

    UCX_TLS=tcp UCX_NET_DEVICES=lo python benchmarks/bench_ucx_push.py [--rounds 5] [--repeat 20]
        [--out benchmarks/results/ucx_push_loopback_<date>.json]

Two linked pairs of real processes (the integration tests' workers, tests/integration/workers.py)
on this host: one forced to tcp (llmdd.Transport="tcp": every push is streamed to the owner over
the link's TCP connection, which is also what a ucx link did with pushes before protocol 6) and
one forced to ucx (the requester writes the owner's pool with UCX puts after the owner described
the destination, then completes). Each case pushes the same blocks (push_blocks, host pools) or
one slot (push_cache); rounds alternate tcp and ucx (ABBA), each round `--repeat` pushes in one
worker request, and the record keeps every round's seconds per push, the median and GB/s. The
bytes are checked once per case and transport, and the ucx link's data_bytes_sent is recorded
(0: nothing streamed).

UCX over tcp (no RDMA here) emulates puts with the owner's worker progress thread, so this
measures the protocol (one extra round trip for the completion, no copy through the owner's
reader thread), not RDMA.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from llm_datadist import _core  # noqa: E402
from llm_datadist._bench import write_record  # noqa: E402
from workers import (PREFILL_ID, WorkerGroup, block_copies, blocks_key, desc, id_key, slot_copies,  # noqa: E402
                     start_pair)

# name -> (api, blocks moved, bytes per block and tensor, tensors)
CASES = {
    "blocks_256x4K": ("push_blocks", 256, 4 << 10, 2),
    "blocks_64x64K": ("push_blocks", 64, 64 << 10, 2),
    "blocks_16x1M": ("push_blocks", 16, 1 << 20, 2),
    "slot_8M": ("push_cache", 1, 4 << 20, 2),
}
TRANSPORTS = ("tcp", "ucx")


def _setup(pair, case, model_id):
    """Caches for `case` on both ends, one push checked byte for byte; (api, args, bytes, caches)."""
    api, n, block, tensors = CASES[case]
    p, d = pair.prefill, pair.decode
    if api == "push_blocks":
        layout = desc(tensors, [2 * n, block], "DT_UINT8", "HOST")
        dst = p.allocate_blocks(layout, blocks_key(PREFILL_ID, model_id))
        src = d.allocate_blocks(layout)
        src_blocks, dst_blocks = list(range(0, 2 * n, 2)), list(range(2 * n - 1, 0, -2))
        args = dict(key=blocks_key(PREFILL_ID, model_id), cache=src.cache_id, src_blocks=src_blocks, dst_blocks=dst_blocks)
        copies = block_copies(src, 5, src_blocks, dst, dst_blocks)
    else:
        layout = desc(tensors, [2, block], "DT_UINT8", "HOST")
        dst = p.allocate(layout)
        src = d.allocate(layout)
        args = dict(key=id_key(PREFILL_ID, dst.cache_id, 1), cache=src.cache_id)
        copies = slot_copies(src, 5, 0, dst, 1)
    d.fill(src, 5)
    p.fill(dst, 6)
    d.ok(d.request(api, **args))
    p.verify(dst, 6, copies, f"{case}: the pushed bytes")
    return api, args, n * block * tensors, ((p, dst), (d, src))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="ABBA rounds per case [5]")
    ap.add_argument("--repeat", type=int, default=20, help="pushes per round [20]")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--out", type=Path, default=None)
    opts = ap.parse_args()
    if not _core.ucx_info()["available"]:
        print("UCX does not load here: " + _core.ucx_info()["reason"])
        return 2
    pool = {"pool_bytes": 256 << 20, "device_pool": False, "sync_kv_timeout": 60000}
    record = {"schema": "llm_datadist.bench_ucx_push/1", "command": " ".join([f"{k}={os.environ[k]}" for k in ("UCX_TLS", "UCX_NET_DEVICES") if k in os.environ]
                                            + ["python"] + sys.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "ucx": _core.ucx_info(), "config": vars(opts) | {"out": str(opts.out)},
              "loadavg_at_start": list(os.getloadavg()), "nproc": os.cpu_count(), "cases": {},
              "notes": ["tcp: pushes streamed on the link's TCP connection (what a ucx link did before protocol 6); "
                        "ucx: one-sided UCX puts, then kPushComplete; UCX_TLS=" + os.environ.get("UCX_TLS", "")
                        + ": puts emulated over tcp by the owner's UCX worker (no RDMA on this machine)"]}
    with WorkerGroup(prefix="bench-push-") as group:
        pairs = {t: start_pair(group, t, prefill_init=pool, decode_init=pool) for t in TRANSPORTS}
        for t, pair in pairs.items():
            assert pair.decode.link_info(PREFILL_ID)["transport"] == t, pair.decode.link_info(PREFILL_ID)
        for model_id, case in enumerate(opts.cases.split(",")):
            prepared = {t: _setup(pairs[t], case, model_id) for t in TRANSPORTS}
            sent_before = {t: pairs[t].decode.link_info(PREFILL_ID)["data_bytes_sent"] for t in TRANSPORTS}
            seconds = {t: [] for t in TRANSPORTS}
            for r in range(opts.rounds):
                for t in (TRANSPORTS if r % 2 == 0 else TRANSPORTS[::-1]):
                    api, args = prepared[t][:2]
                    d = pairs[t].decode
                    t0 = time.perf_counter()
                    d.ok(d.request(api, repeat=opts.repeat, **args))
                    seconds[t].append((time.perf_counter() - t0) / opts.repeat)
            row = {}
            for t in TRANSPORTS:
                nbytes = prepared[t][2]
                med = statistics.median(seconds[t])
                streamed = pairs[t].decode.link_info(PREFILL_ID)["data_bytes_sent"] - sent_before[t]
                row[t] = {"bytes_per_push": nbytes, "seconds_per_push": seconds[t], "median_s": med,
                          "gb_per_s": nbytes / med / 1e9, "data_bytes_sent_per_push": streamed / (opts.rounds * opts.repeat)}
            for t in TRANSPORTS:
                for worker, cache in prepared[t][3]:
                    worker.call("deallocate", cache=cache.cache_id)
            row["ucx_over_tcp"] = row["tcp"]["median_s"] / row["ucx"]["median_s"]
            record["cases"][case] = row
            print(f"{case:16s} tcp streamed {row['tcp']['gb_per_s']:7.3f} GB/s ({row['tcp']['median_s'] * 1e6:9.1f} us)"
                  f"   ucx one-sided {row['ucx']['gb_per_s']:7.3f} GB/s ({row['ucx']['median_s'] * 1e6:9.1f} us)"
                  f"   x{row['ucx_over_tcp']:.2f}   ucx streamed {row['ucx']['data_bytes_sent_per_push']:.0f} B/push")
    record["loadavg_at_end"] = list(os.getloadavg())
    if opts.out:
        write_record(opts.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
