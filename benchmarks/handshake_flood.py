# SPDX-License-Identifier: Apache-2.0
"""A listening prefill under a connection flood: N idle connections (connected, never a byte)
and M half-open ones (a partial frame header, then silence), from several loopback source
addresses. Records the prefill's threads and RSS before, during and after, and whether a
legitimate decode still links and pulls byte-exact meanwhile (issue 10, item 7).

    python benchmarks/handshake_flood.py --idle 1000 --half-open 200 --out benchmarks/results/flood.json

Loopback only; every connection is closed at the end; bounded in count and time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import textwrap
import time
from typing import Dict, List

import numpy as np

import llm_datadist as ld

PREFILL = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import llm_datadist as ld
    cfg = ld.LLMConfig()
    cfg.listen_ip_info = sys.argv[1]
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 16 << 20})
    cfg.enable_cache_manager = True
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    dd.init(cfg.generate_options())
    desc = ld.CacheDesc(2, [8, 4096], ld.DataType.DT_UINT8, ld.Placement.HOST)
    cache = dd.cache_manager.allocate_blocks_cache(desc, ld.BlocksCacheKey(1, 0))
    for t, view in enumerate(cache.numpy()):
        view[...] = np.arange(view.size, dtype=np.uint64).reshape(view.shape).astype(np.uint8) + t
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def proc_status(pid: int) -> Dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    return {"threads": int(re.search(r"Threads:\s+(\d+)", text).group(1)),
            "rss_kib": int(re.search(r"VmRSS:\s+(\d+)", text).group(1)),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def legit_pull(port: int) -> Dict[str, object]:
    """A decode (this process) links, pulls two blocks and checks their bytes."""
    cfg = ld.LLMConfig()
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 16 << 20})
    cfg.enable_cache_manager = True
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2)
    dd.init(cfg.generate_options())
    try:
        t0 = time.monotonic()
        info = ld.LLMClusterInfo()
        info.remote_cluster_id = 1
        info.append_remote_ip_info("127.0.0.1", port)
        ret, per = dd.link_clusters([info], 20000)
        link_s = time.monotonic() - t0
        if ret != ld.LLMStatusCode.LLM_SUCCESS:
            return {"linked": False, "code": str(per), "link_s": link_s}
        desc = ld.CacheDesc(2, [8, 4096], ld.DataType.DT_UINT8, ld.Placement.HOST)
        dst = dd.cache_manager.allocate_blocks_cache(desc)
        dd.cache_manager.pull_blocks(ld.BlocksCacheKey(1, 0), dst, src_blocks=[3, 5], dst_blocks=[0, 1])
        ok = True
        for t, view in enumerate(dst.numpy()):
            want = np.arange(8 * 4096, dtype=np.uint64).reshape(8, 4096).astype(np.uint8) + t
            ok = ok and np.array_equal(view[0], want[3]) and np.array_equal(view[1], want[5])
        return {"linked": True, "link_s": round(link_s, 4), "bytes_ok": bool(ok)}
    finally:
        dd.finalize()


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--half-open", type=int, default=200)
    ap.add_argument("--sources", type=int, default=10, help="loopback source addresses 127.0.0.2 ..")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    need = args.idle + args.half_open + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefill = subprocess.Popen([sys.executable, "-c", PREFILL, f"127.0.0.1:{port}", "300"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    socks: List[socket.socket] = []
    record: Dict[str, object] = {"command": "python benchmarks/handshake_flood.py " + " ".join(argv),
                                 "idle": args.idle, "half_open": args.half_open, "sources": args.sources,
                                 "limits": dict(ld._core.LINK_LIMITS), "llm_datadist": ld.__version__}
    try:
        assert prefill.stdout.readline().strip() == "ready"
        record["before"] = proc_status(prefill.pid)
        refused = 0
        t0 = time.monotonic()
        for i in range(args.idle + args.half_open):
            s = socket.socket()
            s.settimeout(5)
            s.bind((f"127.0.0.{2 + i % args.sources}", 0))
            try:
                s.connect(("127.0.0.1", port))
                if i >= args.idle:
                    s.sendall(b"DDLL\x03\x00")  # 6 of a header's 32 bytes
            except OSError:
                refused += 1
            socks.append(s)
        record["open_s"] = round(time.monotonic() - t0, 3)
        record["connect_failures"] = refused
        time.sleep(0.5)
        record["during"] = proc_status(prefill.pid)
        record["legit_during_flood"] = legit_pull(port)
        record["during_after_legit"] = proc_status(prefill.pid)
        for s in socks:
            s.close()
        socks.clear()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc_status(prefill.pid)["threads"] > record["before"]["threads"] + 2:
            time.sleep(0.2)
        record["after_close"] = proc_status(prefill.pid)
        record["prefill_alive"] = prefill.poll() is None
    finally:
        for s in socks:
            s.close()
        prefill.kill()
        prefill.wait(10)
    print(json.dumps(record, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    ok = record.get("prefill_alive") and record["legit_during_flood"].get("bytes_ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
