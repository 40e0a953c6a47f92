# SPDX-License-Identifier: Apache-2.0
"""What the disarmed CUDA fault-injection shim costs a device copy.

    python benchmarks/bench_fault_overhead.py [--blocks 1024] [--block-bytes 256] [--rounds 31]
        [--reps 40] [--out benchmarks/results/fault_shim_overhead.json]

Two worker processes run the same device copy: swap_blocks of a device-placement blocks cache on
the CUDA backend (one cuMemcpyAsync per block and tensor through cuda::MemcpyBatch, scattered so
that nothing coalesces, plus the context and stream calls around them), on the fake CUDA driver
(fault_injection/fake_cuda), so that the per-call cost dominates. One runs without the shim, the
other under LD_PRELOAD=libllmdd_cuda_fault.so with nothing armed. Rounds alternate between them
(ABBA order); each round reports the median of --reps calls; the result is the median of the
per-round ratios (B/A) and the ratio of the medians. A C loop also measures the cost of one
intercepted call (cuStreamQuery through dlsym(RTLD_DEFAULT), disarmed shim vs none).

Needs a C compiler (for the fake driver). Prints a table and, with --out, records the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import llm_datadist
from llm_datadist import fault_injection as fi
from llm_datadist._bench import write_record

REPO = Path(__file__).resolve().parents[1]
FAKE_DRIVER = REPO / "fault_injection" / "fake_cuda" / "fake_cuda_driver.c"

WORKER = textwrap.dedent("""
    import json, sys, time
    import numpy as np, llm_datadist as ld
    from llm_datadist import CacheDesc, DataType, Placement
    blocks, block_bytes, layers, check = (int(a) for a in sys.argv[1:5])
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    pool = (blocks * block_bytes * layers * 2) + (8 << 20)
    cfg.mem_pool_cfg = json.dumps({"memory_size": pool})
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": pool})
    cfg.device_backend = "cuda"
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2)
    dd.init(cfg.generate_options())
    assert dd.device_backend == "cuda", dd.device_backend
    cm = dd.cache_manager
    desc = lambda p: CacheDesc(layers, [blocks, block_bytes], DataType.DT_INT8, p)
    host, dev = cm.allocate_blocks_cache(desc(Placement.HOST)), cm.allocate_blocks_cache(desc(Placement.DEVICE))
    step = 7919 % blocks or 1
    mapping = {i: (i * step) % blocks for i in range(blocks)}   # a permutation: no two copies coalesce
    assert len(set(mapping.values())) == blocks
    if check:
        back = cm.allocate_blocks_cache(desc(Placement.HOST))
        rng = np.random.default_rng(0)
        for a in host.numpy():
            a.view(np.uint8)[...] = rng.integers(0, 256, a.shape, dtype=np.uint8)
        cm.swap_blocks(host, dev, mapping)
        cm.swap_blocks(dev, back, {i: i for i in range(blocks)})
        ok = all(np.array_equal(b[d], h[s]) for h, b in zip(host.numpy(), back.numpy()) for s, d in mapping.items())
        assert ok, "bytes differ"
    for _ in range(20):
        cm.swap_blocks(host, dev, mapping)   # warm up
    print("ready", flush=True)
    for line in sys.stdin:
        reps = int(line)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            cm.swap_blocks(host, dev, mapping)
            times.append(time.perf_counter_ns() - t0)
        print(json.dumps(times), flush=True)
""")

LOOP = textwrap.dedent("""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <time.h>
    int main(int argc, char **argv) {
      long n = atol(argv[2]);
      if (!dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL)) return 2;
      int (*init)(unsigned) = (int (*)(unsigned))dlsym(RTLD_DEFAULT, "cuInit");
      int (*query)(void *) = (int (*)(void *))dlsym(RTLD_DEFAULT, "cuStreamQuery");
      if (!init || !query || init(0) != 0) return 3;
      struct timespec a, b;
      double best = 1e30;
      for (int round = 0; round < 7; ++round) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < n; ++i) query(NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
        if (ns < best) best = ns;
      }
      printf("%.3f\\n", best);
      return 0;
    }
""")


def compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    sys.exit("bench_fault_overhead: needs a C compiler (cc, gcc or clang) for the fake CUDA driver")


def build(work: Path) -> tuple:
    cc = compiler()
    driver = work / "libcuda.so.1"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(driver), str(FAKE_DRIVER), "-pthread"], check=True)
    (work / "loop.c").write_text(LOOP)
    loop = work / "loop"
    subprocess.run([cc, "-O2", "-o", str(loop), str(work / "loop.c"), "-ldl"], check=True)
    return driver, loop


def base_env(driver: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMDD_") and k != "LD_PRELOAD"}
    env["LLMDD_CUDA_LIBRARY"] = str(driver)
    return env


class Worker:
    def __init__(self, name: str, env: dict, args: argparse.Namespace) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(args.blocks), str(args.block_bytes), str(args.layers),
             "1" if args.check else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"{name} worker failed to start:\n{self.proc.stderr.read()}")

    def run(self, reps: int) -> float:
        self.proc.stdin.write(f"{reps}\n")
        self.proc.stdin.flush()
        return statistics.median(json.loads(self.proc.stdout.readline()))

    def close(self) -> str:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        return self.proc.stderr.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=1024)
    parser.add_argument("--block-bytes", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2, help="tensors per cache (K and V of one layer)")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--loop-calls", type=int, default=2_000_000)
    parser.add_argument("--check", action="store_true", help="verify the copied bytes once first")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    shim = fi.shim_path()
    with tempfile.TemporaryDirectory() as tmp:
        driver, loop = build(Path(tmp))
        env_plain = base_env(driver)
        env_shim = fi.env_for(None, base=env_plain)

        # Per intercepted call: a tight C loop, best of 7.
        per_call = {}
        for name, env in (("no_shim", env_plain), ("shim_disarmed", env_shim)):
            out = subprocess.run([str(loop), str(driver), str(args.loop_calls)], env=env, capture_output=True,
                                 text=True, check=True)
            per_call[name] = float(out.stdout)

        workers = {"no_shim": Worker("no_shim", env_plain, args),
                   "shim_disarmed": Worker("shim_disarmed", env_shim, args)}
        rounds = {"no_shim": [], "shim_disarmed": []}
        order = ["no_shim", "shim_disarmed"]
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):  # ABBA: drift hits both alike
                rounds[name].append(workers[name].run(args.reps))
        stderr = {name: w.close() for name, w in workers.items()}
    if stderr["shim_disarmed"]:
        print(f"note: the shimmed worker wrote to stderr:\n{stderr['shim_disarmed']}", file=sys.stderr)

    regions = args.blocks * args.layers
    med = {name: statistics.median(v) for name, v in rounds.items()}
    round_ratios = [b / a for a, b in zip(rounds["no_shim"], rounds["shim_disarmed"])]
    ratio = statistics.median(round_ratios)
    print(f"swap_blocks of {args.blocks} blocks x {args.layers} tensors x {args.block_bytes} B "
          f"({regions} cuMemcpyAsync per call), {args.rounds} rounds x {args.reps} calls, fake driver")
    print(f"  {'':<16}{'median us/call':>16}{'ns/region':>12}")
    for name in order:
        print(f"  {name:<16}{med[name] / 1e3:>16.1f}{med[name] / regions:>12.1f}")
    print(f"  disarmed shim / no shim: {ratio:.4f} (median of per-round ratios; "
          f"ratio of medians {med['shim_disarmed'] / med['no_shim']:.4f}; "
          f"rounds {min(round_ratios):.3f}..{max(round_ratios):.3f})")
    print(f"  one intercepted call (cuStreamQuery, fake driver): {per_call['no_shim']:.2f} ns without, "
          f"{per_call['shim_disarmed']:.2f} ns with the disarmed shim")
    overhead = (ratio - 1.0) * 100.0
    print(f"  overhead: {overhead:+.2f}% (target: under 2%)")

    if args.out:
        record = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "processor": platform.processor(),
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
            "llm_datadist": llm_datadist.__version__,
            "shim": os.path.basename(shim),
            "config": {"blocks": args.blocks, "block_bytes": args.block_bytes, "layers": args.layers,
                       "copies_per_call": regions, "rounds": args.rounds, "reps": args.reps,
                       "driver": "fake (fault_injection/fake_cuda/fake_cuda_driver.c)"},
            "results": {
                "swap_blocks_median_us": {k: round(v / 1e3, 2) for k, v in med.items()},
                "ns_per_copy": {k: round(v / regions, 2) for k, v in med.items()},
                "ratio_median_of_rounds": round(ratio, 4),
                "ratio_of_medians": round(med["shim_disarmed"] / med["no_shim"], 4),
                "round_ratio_min": round(min(round_ratios), 4),
                "round_ratio_max": round(max(round_ratios), 4),
                "overhead_percent": round(overhead, 2),
                "under_2_percent": overhead < 2.0,
                "intercepted_call_ns": {k: round(v, 2) for k, v in per_call.items()},
            },
        }
        write_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
