# SPDX-License-Identifier: Apache-2.0
"""Layer-wise push overlap: transfer_cache_async while the layers are computed, against
compute-then-push done one after the other.

    python benchmarks/layerwise_overlap.py [--layers 16] [--layer-mib 8] [--compute-ms 5]
        [--transport shm|tcp|shm,tcp] [--iters 5] [--out benchmarks/results/<name>.json]

A decode process owns the destination (one contiguous cache, 2 tensors a layer); this
process is the prefill. Each iteration runs, on the same caches:

- compute:          the model alone: `layers` x compute-ms;
- push:             one push_cache of every layer (the transfer alone);
- compute_then_push: compute every layer, then that one push_cache;
- layerwise_async:  transfer_cache_async started first, the model computes layer i and marks
                    it ready (an event-backed LayerSynchronizer), layer i is pushed meanwhile.

The "model" sleeps compute-ms per layer: the prefill's compute runs on the accelerator, so the
host's cores are free for the push, as here. Times are medians over --iters; overlap is
(compute + push - layerwise_async) / min(compute, push): 1 = fully hidden, 0 = none. After the
last iteration the decode checks every byte of the pushed slot against the source.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

import llm_datadist as ld

PREFILL_ID, DECODE_ID = 1, 2


def options(pool_bytes: int, transport: str, listen: str = "") -> Dict[str, str]:
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": pool_bytes})
    cfg.device_backend = "cpu"
    cfg.sync_kv_timeout = 30000
    if listen:
        cfg.listen_ip_info = listen
    opts = cfg.generate_options()
    opts["llmdd.Transport"] = "tcp" if transport == "tcp" else "auto"
    return opts


def cache_desc(layers: int, layer_bytes: int) -> ld.CacheDesc:
    # one slot; a tensor is half a layer (K or V), in fp16 elements
    return ld.CacheDesc(2 * layers, [1, layer_bytes // 4], ld.DataType.DT_FLOAT16)


def digests(cache: ld.Cache) -> List[str]:
    return [hashlib.sha256(view.view(np.uint8).tobytes()).hexdigest() for view in cache.numpy()]


# ---- the decode process ---------------------------------------------------------------------------

def decode_main(conf: Dict[str, Any]) -> int:
    """Owns the destination cache; answers "digests" and "exit" on stdin."""
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, DECODE_ID)
    dd.init(options(conf["pool_bytes"], conf["transport"], conf["listen"]))
    cache = dd.cache_manager.allocate_cache(cache_desc(conf["layers"], conf["layer_bytes"]))
    print(json.dumps({"cache_id": cache.cache_id}), flush=True)
    for line in sys.stdin:
        if line.strip() == "digests":
            print(json.dumps({"digests": digests(cache)}), flush=True)
        elif line.strip() == "exit":
            break
    dd.finalize()
    return 0


# ---- the prefill (this process) -------------------------------------------------------------------

class LayerEvents(ld.LayerSynchronizer):
    def __init__(self, layers: int) -> None:
        self.ready = [threading.Event() for _ in range(layers)]

    def synchronize_layer(self, layer_index: int, timeout_in_millis: Any) -> bool:
        return self.ready[layer_index].wait(None if timeout_in_millis is None else timeout_in_millis / 1000)


def compute(layers: int, compute_s: float, events: Any = None) -> None:
    for i in range(layers):
        time.sleep(compute_s)
        if events is not None:
            events.ready[i].set()


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--layer-mib", type=float, default=8.0, help="KV bytes of one layer (K + V), MiB")
    parser.add_argument("--compute-ms", type=float, default=5.0, help="compute time of one layer")
    parser.add_argument("--transport", default="shm", help="shm, tcp, or both: shm,tcp")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--decode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode:
        return decode_main(json.loads(args.decode))
    rows = [run(args, transport) for transport in args.transport.split(",")]
    if args.out:
        from llm_datadist._bench import write_record
        write_record(args.out, {
            "command": " ".join(["python"] + sys.argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "load_average": list(os.getloadavg())},
            "llm_datadist": ld.__version__, "results": rows})
    return 0 if all(row["every_byte_verified"] for row in rows) else 1


def run(args: argparse.Namespace, transport: str) -> Dict[str, Any]:
    layer_bytes = int(args.layer_mib * (1 << 20)) // 4 * 4
    pool_bytes = (args.layers * layer_bytes + (64 << 20)) // (1 << 20) * (1 << 20)
    listen = f"127.0.0.1:{free_port()}"
    conf = {"layers": args.layers, "layer_bytes": layer_bytes, "pool_bytes": pool_bytes,
            "transport": transport, "listen": listen}
    decode = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--decode", json.dumps(conf)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        dst_id = json.loads(decode.stdout.readline())["cache_id"]
        dd = ld.LLMDataDist(ld.LLMRole.PROMPT, PREFILL_ID)
        dd.init(options(pool_bytes, transport))
        cm = dd.cache_manager
        info = ld.LLMClusterInfo()
        info.remote_cluster_id = DECODE_ID
        ip, port = listen.split(":")
        info.append_remote_ip_info(ip, int(port))
        ret, per = dd.link_clusters([info], 10000)
        assert ret == ld.LLMStatusCode.LLM_SUCCESS and per == [ld.LLMStatusCode.LLM_SUCCESS], (ret, per)
        src = cm.allocate_cache(cache_desc(args.layers, layer_bytes))
        rng = np.random.default_rng(7)
        for view in src.numpy():
            flat = view.view(np.uint8).reshape(-1)
            flat[:] = rng.integers(0, 256, flat.size, dtype=np.uint8)
        key = ld.CacheKeyByIdAndIndex(DECODE_ID, dst_id, 0)
        config = ld.TransferWithCacheKeyConfig(key, range(0, args.layers), range(0, args.layers))
        compute_s = args.compute_ms / 1000

        def push() -> None:
            cm.push_cache(key, src)

        def layerwise() -> None:
            events = LayerEvents(args.layers)
            task = cm.transfer_cache_async(src, events, [config])
            compute(args.layers, compute_s, events)
            code = task.synchronize(60000)
            assert code == ld.LLMStatusCode.LLM_SUCCESS, code

        runs: Dict[str, List[float]] = {"compute": [], "push": [], "compute_then_push": [], "layerwise_async": []}
        push()  # warm-up: the link's first transfer
        layerwise()
        for _ in range(args.iters):
            runs["compute"].append(timed(lambda: compute(args.layers, compute_s)))
            runs["push"].append(timed(push))
            runs["compute_then_push"].append(timed(lambda: (compute(args.layers, compute_s), push())))
            runs["layerwise_async"].append(timed(layerwise))
        decode.stdin.write("digests\n")
        decode.stdin.flush()
        received = json.loads(decode.stdout.readline())["digests"]
        verified = received == digests(src)
        median = {name: statistics.median(values) for name, values in runs.items()}
        hidden = median["compute"] + median["push"] - median["layerwise_async"]
        overlap = hidden / min(median["compute"], median["push"])
        row = {"transport": transport, "layers": args.layers, "layer_bytes": layer_bytes,
               "compute_ms_per_layer": args.compute_ms, "iters": args.iters,
               **{f"{name}_ms": round(value * 1e3, 2) for name, value in median.items()},
               "speedup_vs_compute_then_push": round(median["compute_then_push"] / median["layerwise_async"], 3),
               "overlap": round(overlap, 3), "push_gbps": round(args.layers * layer_bytes / median["push"] / 1e9, 2),
               "every_byte_verified": verified, "runs_ms": {k: [round(v * 1e3, 2) for v in vs] for k, vs in runs.items()}}
        print(f"{transport}: {args.layers} layers x {layer_bytes / (1 << 20):.1f} MiB, compute {args.compute_ms} ms/layer")
        for name in ("compute", "push", "compute_then_push", "layerwise_async"):
            print(f"  {name:>18}: {median[name] * 1e3:8.1f} ms")
        print(f"  overlap {overlap:.2f}, speedup {row['speedup_vs_compute_then_push']:.2f}x, "
              f"every byte verified: {verified}")
        cm.deallocate_cache(src)
        dd.finalize()
        return row
    finally:
        if decode.poll() is None:
            try:
                decode.stdin.write("exit\n")
                decode.stdin.flush()
                decode.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                decode.kill()
                decode.wait(10)


if __name__ == "__main__":
    sys.exit(main())
