# SPDX-License-Identifier: Apache-2.0
"""A decode process pulling device-placement blocks from a prefill process, under the CUDA fault
shim: an injected XID 48 surfaces as LLM_DEVICE_MEM_ERROR (not recoverable, XID named), and a
transient fault is ridden out by the retry helper with every byte right. The fake CUDA driver on
CPU-only machines; `-m cuda` runs it on a real GPU."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

from fault_harness import clean_env
from llm_datadist import fault_injection as fi

COMMON = textwrap.dedent("""
    import json, sys, time, numpy as np, llm_datadist as ld
    from llm_datadist import CacheDesc, DataType, LLMException, Placement, BlocksCacheKey
    def config(listen=None):
        cfg = ld.LLMConfig(); cfg.device_id = 0; cfg.enable_cache_manager = True; cfg.device_backend = "cuda"
        cfg.mem_pool_cfg = json.dumps({"memory_size": 8 << 20})
        cfg.host_mem_pool_cfg = json.dumps({"memory_size": 8 << 20})
        if listen: cfg.listen_ip_info = listen
        return cfg.generate_options()
    desc = lambda p: CacheDesc(2, [32, 4096], DataType.DT_UINT8, p)
    def pattern(t):
        return ((np.arange(32 * 4096, dtype=np.int64) * (t + 3) + 11 * t) % 251).astype(np.uint8).reshape(32, 4096)
""")

PREFILL = COMMON + textwrap.dedent("""
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1); dd.init(config(sys.argv[1])); cm = dd.cache_manager
    dev = cm.allocate_blocks_cache(desc(Placement.DEVICE), BlocksCacheKey(1, 0))
    host = cm.allocate_blocks_cache(desc(Placement.HOST))
    for t, a in enumerate(host.numpy()): a[...] = pattern(t)
    cm.swap_blocks(host, dev, {b: b for b in range(32)})
    print("ready", flush=True)
    time.sleep(120)
""")

DECODE = COMMON + textwrap.dedent("""
    from llm_datadist import fault_injection as fi
    from llm_datadist.retry import retry
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2); dd.init(config()); cm = dd.cache_manager
    cluster = ld.LLMClusterInfo(); cluster.remote_cluster_id = 1
    cluster.append_remote_ip_info("127.0.0.1", int(sys.argv[1]))
    assert dd.link_clusters([cluster], 5000)[0] == ld.LLMStatusCode.LLM_SUCCESS
    dev = cm.allocate_blocks_cache(desc(Placement.DEVICE))
    back = cm.allocate_blocks_cache(desc(Placement.HOST))
    key = BlocksCacheKey(1, 0)
    out = {}

    def attempt(fn):
        try:
            fn()
            return {"ok": True}
        except LLMException as e:
            return {"code": e.status_code.name, "recoverable": e.recoverable, "action": e.action,
                    "context": e.context, "message": str(e)}

    def check(mapping):
        cm.swap_blocks(dev, back, {d: d for d in mapping.values()})
        return all(np.array_equal(a[d], pattern(t)[s]) for t, a in enumerate(back.numpy()) for s, d in mapping.items())

    out["first"] = attempt(lambda: cm.pull_blocks(key, dev, [1, 2], [5, 6]))      # opens cuda_ipc
    out["first_bytes"] = check({1: 5, 2: 6})
    out["ipc_opened"] = dd.link_info(1)["cuda_ipc_opened"]

    # A transient, retryable device-copy failure: the retry helper completes the pull.
    mapping = {s: (5 * s + 1) % 32 for s in range(0, 32, 3)}
    retries = []
    with fi.armed(code=701, transient=2, functions="cuMemcpyAsync"):
        retry(lambda: cm.pull_blocks(key, dev, list(mapping), list(mapping.values())), base_delay=0.01,
              on_retry=lambda n, e, d: retries.append([n, e.context.get("cuda_code"), e.recoverable]))
    out["retries"] = retries
    out["retry_bytes"] = check(mapping)

    # An uncorrectable ECC error (XID 48): fatal, not retried, the XID named.
    with fi.armed(xid=48):
        out["xid48"] = attempt(lambda: retry(lambda: cm.pull_blocks(key, dev, [7], [8]), base_delay=0.01))
    print("RESULT " + json.dumps(out))
    dd.finalize()
""")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_pull_scenario(prefill_env, decode_env):
    port = free_port()
    prefill = subprocess.Popen([sys.executable, "-c", PREFILL, f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=prefill_env, start_new_session=True)
    try:
        assert prefill.stdout.readline().strip() == "ready", prefill.stderr.read()
        proc = subprocess.run([sys.executable, "-c", DECODE, str(port)], capture_output=True, text=True, timeout=120,
                              env=decode_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT "):])
    finally:
        prefill.kill()
        prefill.wait()


def check(out):
    assert out["first"] == {"ok": True} and out["first_bytes"] is True
    assert out["ipc_opened"] is True, "the device pull did not go over cuda_ipc"
    assert out["retries"] == [[1, 701, True], [2, 701, True]], out["retries"]
    assert out["retry_bytes"] is True
    err = out["xid48"]
    assert err["code"] == "LLM_DEVICE_MEM_ERROR" and err["recoverable"] is False and err["action"] == "fatal", err
    assert err["context"]["xid"] == 48 and err["context"]["fault_injected"] is True, err
    assert "attempts" not in err["context"], "a fatal error must not be retried"
    assert "[XID 48, injected by the CUDA fault shim]" in err["message"], err


@pytest.mark.timeout(180)
def test_decode_pull_under_injected_faults(fault_build):
    prefill_env = clean_env(fault_build, shim=False, devices=1)
    decode_env = fi.env_for(None, base=clean_env(fault_build, shim=False, devices=1))
    check(run_pull_scenario(prefill_env, decode_env))


@pytest.mark.cuda
@pytest.mark.timeout(180)
def test_decode_pull_under_injected_faults_on_real_cuda():
    env = fi.env_for(None)
    env.pop("LLMDD_CUDA_LIBRARY", None)
    probe = subprocess.run([sys.executable, "-c", "import llm_datadist as ld; print(ld._core.cuda_info()['available'])"],
                           capture_output=True, text=True, timeout=120, env=env)
    if probe.stdout.strip() != "True":
        pytest.skip("no usable CUDA device on this host")
    plain = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    check(run_pull_scenario(plain, env))
