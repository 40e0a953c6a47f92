# SPDX-License-Identifier: Apache-2.0
"""How fast failures are noticed, and what links cost.

(The code of `benchmarks/bench_failures.py`, a thin script over this module; `llm-datadist bench`
calls `measure()`.)

    python benchmarks/bench_failures.py [--repeats 5] [--sync-kv-timeout-ms 500] [--out F]

Measured, each `--repeats` times against a real prefill process on loopback:
  kill_in_flight_ms   SIGKILL of the prefill while a pull waits on it -> LLMException
  kill_next_call_ms   the next pull after that (the link is broken)
  freeze_timeout_ms   SIGSTOP'd prefill: the pull ends with LLM_TIMEOUT (should be ~sync_kv_timeout)
  link_ms / unlink_ms link_clusters / unlink_clusters of one cluster (shm)
  relink_after_restart_ms   a restarted prefill on the same port linked again
Medians are printed and every sample recorded with the command line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import llm_datadist as ld

from . import write_record
from .report import Column, Table, quantiles
from .transfer import free_port

PREFILL = r"""
import json, sys, time, llm_datadist as ld
cfg = ld.LLMConfig(); cfg.device_id = 0; cfg.enable_cache_manager = True
cfg.host_mem_pool_cfg = json.dumps({"memory_size": 16 << 20}); cfg.listen_ip_info = sys.argv[1]
dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1); dd.init(cfg.generate_options())
cm = dd.cache_manager
cm.allocate_cache(ld.CacheDesc(2, [64, 4096], ld.DataType.DT_UINT8, ld.Placement.HOST),
                  [ld.CacheKey(1, 2**64 - 1, prefix_id=i) for i in range(64)])
print("ready", flush=True)
time.sleep(3600)
"""


def start_prefill(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PREFILL, f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("prefill did not start")
    return proc


def freeze(pid: int, timeout_s: float = 5.0) -> None:
    """SIGSTOP, then wait until the kernel reports the process stopped: kill() returns before
    the signal takes effect, and a pull sent in between can still be answered."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.001)
    raise RuntimeError(f"prefill {pid} did not stop within {timeout_s} s of SIGSTOP")


def measure(repeats: int = 5, sync_kv_timeout_ms: int = 500,
            progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Every sample of the measures above, `repeats` times: {"samples_ms", "medians_ms", "codes"}."""

    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 16 << 20})
    cfg.sync_kv_timeout = sync_kv_timeout_ms
    decode = ld.LLMDataDist(ld.LLMRole.DECODER, 2)
    decode.init(cfg.generate_options())
    cm = decode.cache_manager
    local = cm.allocate_cache(ld.CacheDesc(2, [64, 4096], ld.DataType.DT_UINT8, ld.Placement.HOST))
    samples = {k: [] for k in ("link_ms", "unlink_ms", "kill_in_flight_ms", "kill_next_call_ms", "freeze_timeout_ms",
                               "relink_after_restart_ms")}
    codes = {}

    def pull_expecting_failure(code_name: str, sample_name: str) -> None:
        """One pull that should fail: its code under codes[code_name], its time in ms."""
        t0 = time.perf_counter()
        try:
            cm.pull_cache(ld.CacheKey(1, 2**64 - 1, prefix_id=0), local)
        except ld.LLMException as exc:
            codes[code_name] = exc.status_code.name
        samples[sample_name].append((time.perf_counter() - t0) * 1e3)

    for rep in range(repeats):
        if progress is not None:
            progress(f"failures: repeat {rep + 1}/{repeats}")
        port = free_port()
        cluster = ld.LLMClusterInfo()
        cluster.remote_cluster_id = 1
        cluster.append_remote_ip_info("127.0.0.1", port)

        # link / unlink cost, then a fresh link for the kill test
        prefill = start_prefill(port)
        t0 = time.perf_counter()
        assert decode.link_clusters([cluster], 5000)[0] == ld.LLMStatusCode.LLM_SUCCESS
        samples["link_ms"].append((time.perf_counter() - t0) * 1e3)
        cm.pull_cache(ld.CacheKey(1, 2**64 - 1, prefix_id=rep), local)
        t0 = time.perf_counter()
        assert decode.unlink_clusters([cluster], 5000)[0] == ld.LLMStatusCode.LLM_SUCCESS
        samples["unlink_ms"].append((time.perf_counter() - t0) * 1e3)
        decode.link_clusters([cluster], 5000)

        # kill while a pull waits: freeze first so the pull is surely in flight
        freeze(prefill.pid)
        result = {}

        def pull() -> None:
            try:
                cm.pull_cache(ld.CacheKey(1, 2**64 - 1, prefix_id=0), local)
                result["code"] = "LLM_SUCCESS"
            except ld.LLMException as exc:
                result["code"] = exc.status_code.name
            result["t"] = time.perf_counter()

        worker = threading.Thread(target=pull)
        worker.start()
        time.sleep(0.1)
        t_kill = time.perf_counter()
        os.kill(prefill.pid, signal.SIGKILL)
        worker.join(10)
        samples["kill_in_flight_ms"].append((result["t"] - t_kill) * 1e3)
        codes["kill_in_flight"] = result["code"]
        pull_expecting_failure("kill_next_call", "kill_next_call_ms")
        prefill.wait()
        decode.unlink_clusters([cluster], 1000, force=True)

        # restart on the same port, relink, then freeze: the pull times out at sync_kv_timeout
        prefill = start_prefill(port)
        t1 = time.perf_counter()
        assert decode.link_clusters([cluster], 5000)[0] == ld.LLMStatusCode.LLM_SUCCESS
        samples["relink_after_restart_ms"].append((time.perf_counter() - t1) * 1e3)
        freeze(prefill.pid)
        pull_expecting_failure("freeze", "freeze_timeout_ms")
        os.kill(prefill.pid, signal.SIGKILL)
        prefill.wait()
        decode.unlink_clusters([cluster], 1000, force=True)
    decode.finalize()
    return {"sync_kv_timeout_ms": sync_kv_timeout_ms, "repeats": repeats,
            "medians_ms": {k: quantiles(v)["median"] for k, v in samples.items() if v},
            "samples_ms": {k: [round(x, 3) for x in v] for k, v in samples.items()}, "codes": codes}


def main(argv: Optional[Sequence[str]] = None, script: Optional[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sync-kv-timeout-ms", type=int, default=500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.repeats, args.sync_kv_timeout_ms)
    samples, codes = result["samples_ms"], result["codes"]
    table = Table([Column("measure", 26, "<"), Column("median ms", 10), Column("min", 8), Column("max", 8)])
    print(table.header()[0])
    for name, values in samples.items():
        q = quantiles(values)
        print(table.row(name, f"{q['median']:.2f}", f"{q['min']:.2f}", f"{q['max']:.2f}"))
    print(f"codes: {codes} (sync_kv_timeout {args.sync_kv_timeout_ms} ms)")
    if args.out:
        record = {
            "command": " ".join(["python", os.path.relpath(script or __file__)] + list(sys.argv[1:] if argv is None else argv)),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "load_average": os.getloadavg()},
            "llm_datadist": ld.__version__,
            "sync_kv_timeout_ms": args.sync_kv_timeout_ms,
            "medians_ms": result["medians_ms"],
            "samples_ms": samples,
            "codes": codes,
        }
        write_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
