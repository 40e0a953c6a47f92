# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist`: demo, explain, doctor."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional


def _cmd_explain(args: argparse.Namespace) -> int:
    from .status import status_info
    try:
        info = status_info(args.code)
    except (ValueError, TypeError) as exc:
        print(f"llm-datadist explain: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    value = info["value"]
    hex_value = f"0x{value & 0xFFFFFFFF:08X}" if value >= 0 else str(value)
    python_name = info["python_name"] or f"(no Python member; reaches Python as LLM_FAILED)"
    print(f"{info['cpp_name']}  {hex_value}  ({value})")
    print(f"  Python name:  LLMStatusCode.{python_name}" if info["python_name"] else f"  Python name:  {python_name}")
    print(f"  Meaning:      {info['message']}")
    print(f"  Recoverable:  {'yes' if info['recoverable'] else 'no'}")
    print(f"  Action:       {info['action']}")
    print(f"  What to do:   {info['suggestion']}")
    print(f"  Serving:      HTTP {info['http_status']} / gRPC {info['grpc_code']}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from . import build_info
    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cuda = info["cuda"]
    print(f"llm_datadist {info['version']}")
    print(f"  native module:  {info['native_module']}")
    print(f"  C++ headers:    {info['include_dir']}")
    print(f"  C++ library:    {info['library_dir']}/libllm_datadist.so")
    if cuda["available"]:
        print(f"  CUDA:           available, driver {cuda['driver_version']}, library {cuda['library_path']}")
        for i, name in enumerate(cuda["device_names"]):
            print(f"    device {i}: {name}, {cuda['device_total_bytes'][i] / 2**30:.1f} GiB")
        if cuda.get("interposed"):
            print("  note: CUDA calls are interposed by a preloaded library (fault injection?)")
        print("  Placement.DEVICE means: CUDA device memory (LLMConfig.device_backend='cpu' to change)")
    else:
        print(f"  CUDA:           not available ({cuda['reason']})")
        print("  Placement.DEVICE means: the CPU device (host memory standing in for a GPU)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from . import (BlocksCacheKey, Cache, CacheDesc, CacheKey, DataType, LLMConfig, LLMDataDist, LLMRole,
                   Placement)

    rng = np.random.default_rng(args.seed)
    cfg = LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": 256 << 20})
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 256 << 20})
    if args.device_backend:
        cfg.device_backend = args.device_backend
    dd = LLMDataDist(LLMRole.PROMPT, 1)
    dd.init(cfg.generate_options())
    cm = dd.cache_manager
    print(f"llm-datadist demo: single-process cache round trip (device backend: {dd.device_backend})")
    failures = 0

    def check(label: str, ok: bool, nbytes: int, seconds: float) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        rate = nbytes / seconds / 1e9 if seconds > 0 else float("inf")
        print(f"  {'OK  ' if ok else 'FAIL'} {label:<44} {nbytes / 2**20:8.2f} MiB  {rate:7.2f} GB/s")

    try:
        # 1. contiguous caches with keys: copy one batch slot, every byte checked
        layers, batch, seq, hidden = 4, 4, 256, 512
        desc = CacheDesc(2 * layers, [batch, seq, hidden], DataType.DT_FLOAT16, Placement.DEVICE)
        src = cm.allocate_cache(desc, [CacheKey(1, req_id=i) for i in range(batch)])
        dst = cm.allocate_cache(CacheDesc(2 * layers, [batch, seq, hidden], DataType.DT_FLOAT16, Placement.DEVICE))
        host_readable = dd.device_backend == "cpu"
        src_views = src.torch() if not host_readable else src.numpy()
        payload = [rng.integers(0, 2**16, size=(batch, seq, hidden), dtype=np.uint16) for _ in src_views]
        for view, data in zip(src_views, payload):
            _fill(view, data)
        t0 = time.perf_counter()
        cm.copy_cache(dst, src, dst_batch_index=2, src_batch_index=1)
        dt = time.perf_counter() - t0
        got = [_read(v) for v in (dst.torch() if not host_readable else dst.numpy())]
        ok = all(np.array_equal(g[2], p[1]) for g, p in zip(got, payload))
        check("copy_cache slot 1 -> slot 2", ok, 2 * layers * seq * hidden * 2, dt)

        # 2. blocks cache on the device, swapped out to host and back in
        num_blocks, block_tokens, heads, dim = 64, 16, 8, 128
        bdesc = CacheDesc(2 * layers, [num_blocks, block_tokens, heads, dim], DataType.DT_BF16, Placement.DEVICE)
        dev = cm.allocate_blocks_cache(bdesc, BlocksCacheKey(1, 0))
        host = cm.allocate_blocks_cache(CacheDesc(2 * layers, [num_blocks, block_tokens, heads, dim],
                                                  DataType.DT_BF16, Placement.HOST))
        dev_views = dev.torch() if not host_readable else dev.numpy()
        blocks_payload = [rng.integers(0, 2**16, size=(num_blocks, block_tokens, heads, dim), dtype=np.uint16)
                          for _ in dev_views]
        for view, data in zip(dev_views, blocks_payload):
            _fill(view, data)
        mapping = {int(s): int(d) for s, d in zip(rng.permutation(num_blocks)[:32], rng.permutation(num_blocks)[:32])}
        block_bytes = block_tokens * heads * dim * 2
        t0 = time.perf_counter()
        cm.swap_blocks(dev, host, mapping)
        dt = time.perf_counter() - t0
        host_arrays = host.numpy()
        ok = all(np.array_equal(h[d], p[s]) for h, p in zip(host_arrays, blocks_payload) for s, d in mapping.items())
        check(f"swap_blocks device -> host ({len(mapping)} blocks)", ok, len(mapping) * block_bytes * 2 * layers, dt)

        t0 = time.perf_counter()
        cm.copy_blocks(dev, {0: [1, 2]})
        dt = time.perf_counter() - t0
        got = [_read(v) for v in (dev.torch() if not host_readable else dev.numpy())]
        ok = all(np.array_equal(g[1], p[0]) and np.array_equal(g[2], p[0]) for g, p in zip(got, blocks_payload))
        check("copy_blocks 0 -> [1, 2]", ok, 2 * block_bytes * 2 * layers, dt)

        back = {d: s for s, d in mapping.items()}
        cpu_cache = Cache.create_cpu_cache(host.cache_desc, host.tensor_addrs)
        t0 = time.perf_counter()
        cm.swap_blocks(cpu_cache, dev, back)
        dt = time.perf_counter() - t0
        got = [_read(v) for v in (dev.torch() if not host_readable else dev.numpy())]
        ok = all(np.array_equal(g[s], p[s]) for g, p in zip(got, blocks_payload) for s in back.values())
        check("swap_blocks host -> device (create_cpu_cache)", ok, len(back) * block_bytes * 2 * layers, dt)

        # Views pin their memory (it stays valid after deallocation): drop them first.
        del src_views, dev_views, host_arrays, got, view
        for key in range(batch):
            cm.remove_cache_key(CacheKey(1, req_id=key))
        cm.deallocate_cache(src)
        cm.deallocate_cache(dst)
        cm.deallocate_blocks_cache(dev)
        cm.deallocate_blocks_cache(host)
        stats = cm.pool_stats(Placement.DEVICE)
        leak_free = stats["used_bytes"] == 0 and stats["free_range_count"] == 1
        print(f"  {'OK  ' if leak_free else 'FAIL'} pools back to one free range after deallocation")
        failures += 0 if leak_free else 1
    finally:
        dd.finalize()
    print("demo " + ("passed" if failures == 0 else f"FAILED ({failures} checks)"))
    return 0 if failures == 0 else 1


def _fill(view, data) -> None:
    if hasattr(view, "copy_"):  # torch tensor (device memory)
        import torch
        view.view(torch.uint16).copy_(torch.from_numpy(data).to(view.device))
    else:
        view[...] = data.view(view.dtype)


def _read(view):
    import numpy as np
    if hasattr(view, "cpu"):
        import torch
        return view.view(torch.uint16).cpu().numpy()
    return np.asarray(view).view(np.uint16)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-datadist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="allocate, copy and swap caches, verifying every byte")
    demo.add_argument("--device-backend", choices=["auto", "cuda", "cpu"], default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    explain = sub.add_parser("explain", help="what a status code means and what to do about it")
    explain.add_argument("code", help="0x5010B002, 1343270914 or LLM_KV_CACHE_NOT_EXIST")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=_cmd_explain)
    doctor = sub.add_parser("doctor", help="what this build found: native library, CUDA, devices")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=_cmd_doctor)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
