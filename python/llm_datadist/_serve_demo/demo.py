# SPDX-License-Identifier: Apache-2.0
"""The `serve-demo` command: run prompts through P prefill + D decode workers, compare every
token with the monolithic run and every transferred KV byte with the prefill's, print the
per-request time-to-first-token split (prefill compute, transfer, first decode step)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

__all__ = ["add_arguments", "run_serve_demo"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefill", type=int, default=2, metavar="P", help="prefill workers (default 2)")
    parser.add_argument("--decode", type=int, default=2, metavar="D", help="decode workers (default 2)")
    parser.add_argument("--prompts", type=int, default=16, help="number of prompts (varied lengths)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--min-len", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0, help="weights and prompts")
    parser.add_argument("--kv-heads", type=int, default=4,
                        help="KV heads per layer (default 4 = the query heads; 1 or 2 gives GQA)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when torch sees a GPU, else CPU")
    parser.add_argument("--transport", choices=["auto", "tcp"], default="auto")
    parser.add_argument("--sync-kv-timeout-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=0, help="requests in flight (default P + D)")
    parser.add_argument("--log-dir", default=None, help="worker and driver logs (JSON lines)")
    parser.add_argument("--out", default=None, help="write the per-request results as JSON here")
    parser.add_argument("--no-check", action="store_true", help="skip the monolithic reference run")


def _device(choice: str) -> str:
    import torch
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def run_serve_demo(args: Optional[argparse.Namespace] = None) -> int:
    try:
        import torch
    except ImportError:
        print("llm-datadist serve-demo needs torch (pip install 'llm-datadist[torch]')", file=sys.stderr)
        return 2
    from .driver import Cluster, result_rows
    from .model import ModelConfig, TinyDecoder, generate_monolithic, make_prompts

    a = args if args is not None else argparse.ArgumentParser().parse_args([])
    device = _device(a.device)
    try:
        cfg = ModelConfig(seed=a.seed, num_kv_heads=a.kv_heads)
    except ValueError as exc:
        print(f"llm-datadist serve-demo: --kv-heads: {exc}", file=sys.stderr)
        return 2
    prompts = make_prompts(a.prompts, a.seed, cfg.vocab_size, a.min_len, a.max_len)
    env = dict(os.environ)
    env.pop("LLMDD_TRANSPORT", None)
    if a.transport == "tcp":
        env["LLMDD_TRANSPORT"] = "tcp"
    print(f"llm-datadist serve-demo: {a.prefill} prefill + {a.decode} decode workers, {len(prompts)} prompts "
          f"({min(map(len, prompts))}-{max(map(len, prompts))} tokens), {a.max_new_tokens} new tokens each, "
          f"model {cfg.num_layers} layers x {cfg.num_heads} heads ({cfg.num_kv_heads} KV) x {cfg.head_dim}, "
          f"vocab {cfg.vocab_size}, "
          f"{cfg.block_size}-token blocks, {device}")
    t0 = time.monotonic()
    cluster = Cluster(a.prefill, a.decode, cfg.to_dict(), device=device, sync_kv_timeout_ms=a.sync_kv_timeout_ms,
                      log_dir=a.log_dir, decode_env=env, prefill_env=env)
    try:
        cluster.start()
        start_s = time.monotonic() - t0
        print(f"  workers up in {start_s:.1f} s; links: "
              + ", ".join(f"{k} {v}" for k, v in sorted(cluster.transports.items())))
        t1 = time.monotonic()
        results = cluster.run(prompts, a.max_new_tokens, a.concurrency or None)
        wall = time.monotonic() - t1
        health = {cid: s["state"] for cid, s in cluster.health.snapshot().items()}
    finally:
        cluster.close()

    reference: Optional[List[List[int]]] = None
    if not a.no_check:
        torch.set_num_threads(1)
        reference = generate_monolithic(TinyDecoder(cfg, device), prompts, a.max_new_tokens)

    print(f"  {'request':<8} {'len':>4} {'P':>4} {'D':>4}  {'prefill':>8} {'transfer':>8} {'decode1':>8} "
          f"{'other':>7} {'TTFT ms':>8}  {'kv':<9} tokens")
    bad = 0
    for i, r in enumerate(results):
        other = r.ttft_ms - r.prefill_ms - r.transfer_ms - r.recompute_ms - r.first_decode_ms
        same = reference is None or r.tokens == reference[i]
        kv = {True: "equal", False: "DIFFERENT", None: r.kv_source}[r.kv_equal]
        bad += (not same) + (r.kv_equal is False)
        print(f"  {r.request_id:<8} {r.prompt_len:>4} {str(r.prefill_worker or '-'):>4} {r.decode_worker:>4}  "
              f"{r.prefill_ms:8.2f} {r.transfer_ms:8.2f} {r.first_decode_ms:8.2f} {other:7.2f} {r.ttft_ms:8.2f}  "
              f"{kv:<9} {'same as monolithic' if reference is not None and same else ('DIFFERENT' if not same else '')}")
    med = {k: statistics.median(getattr(r, k) for r in results)
           for k in ("prefill_ms", "transfer_ms", "first_decode_ms", "ttft_ms")}
    print(f"  median: prefill {med['prefill_ms']:.2f} ms, transfer {med['transfer_ms']:.2f} ms, "
          f"first decode step {med['first_decode_ms']:.2f} ms, TTFT {med['ttft_ms']:.2f} ms; "
          f"{len(results)} requests in {wall:.2f} s; peer health {health}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        doc: Dict[str, Any] = {
            "command": "llm-datadist serve-demo " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "",
            "argv": sys.argv, "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                       "python": platform.python_version(), "torch": torch.__version__},
            "device": device, "model": cfg.to_dict(), "prefill_workers": a.prefill, "decode_workers": a.decode,
            "transports": cluster.transports, "max_new_tokens": a.max_new_tokens, "workers_start_s": start_s,
            "wall_s": wall, "tokens_match_monolithic": bad == 0 if reference is not None else None,
            "median_ms": med, "peer_health": health, "requests": result_rows(results),
            "notes": "ttft_ms = submit -> first token emitted by the decode worker; other = ttft - prefill - "
                     "transfer - recompute - first decode step (routing, queueing, pipes)",
        }
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"  results written to {a.out}")
    if bad:
        print(f"serve-demo FAILED: {bad} mismatches")
        return 1
    print("serve-demo passed: " + ("every token equals the monolithic run, " if reference is not None else "")
          + "every pulled KV block equals the prefill's byte for byte")
    return 0
