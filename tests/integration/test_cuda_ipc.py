# SPDX-License-Identifier: Apache-2.0
"""Device-placement pulls between two processes with the CUDA backend: cuda_ipc on an shm link
(the owner's device pool opened over CUDA IPC, one batched device copy), staged through host
memory on a tcp link. CPU-only CI runs this against the fake CUDA driver (whose IPC handles work
across processes); `-m cuda` runs the same scenario on a real GPU."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fake_cuda import CUDA_CHILD_CONFIG, build_fake_cuda, fake_cuda_env  # noqa: E402

COMMON = CUDA_CHILD_CONFIG + textwrap.dedent("""
    import json, sys, time, numpy as np, llm_datadist as ld
    def pattern(tensor, blocks=16, block=4096):
        return ((np.arange(blocks * block, dtype=np.int64) * (tensor + 5) + tensor) % 241).astype(np.uint8).reshape(blocks, block)
""")

PREFILL = COMMON + textwrap.dedent("""
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1); dd.init(config(sys.argv[1]))
    cm = dd.cache_manager
    dev = cm.allocate_blocks_cache(ld.CacheDesc(2, [16, 4096], ld.DataType.DT_UINT8, ld.Placement.DEVICE),
                                   ld.BlocksCacheKey(1, 0))
    host = cm.allocate_blocks_cache(ld.CacheDesc(2, [16, 4096], ld.DataType.DT_UINT8, ld.Placement.HOST))
    for t, a in enumerate(host.numpy()): a[...] = pattern(t)
    cm.swap_blocks(host, dev, {b: b for b in range(16)})
    print("ready", flush=True)
    time.sleep(120)
""")

DECODE = COMMON + textwrap.dedent("""
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2); dd.init(config(transport=sys.argv[2]))
    cm = dd.cache_manager
    cluster = ld.LLMClusterInfo(); cluster.remote_cluster_id = 1
    cluster.append_remote_ip_info("127.0.0.1", int(sys.argv[1]))
    assert dd.link_clusters([cluster], 5000)[0] == ld.LLMStatusCode.LLM_SUCCESS
    dev = cm.allocate_blocks_cache(ld.CacheDesc(2, [16, 4096], ld.DataType.DT_UINT8, ld.Placement.DEVICE))
    mapping = {3: 0, 7: 1, 8: 2, 15: 9}
    cm.pull_blocks(ld.BlocksCacheKey(1, 0), dev, list(mapping), list(mapping.values()))
    host = cm.allocate_blocks_cache(ld.CacheDesc(2, [16, 4096], ld.DataType.DT_UINT8, ld.Placement.HOST))
    cm.swap_blocks(dev, host, {b: b for b in range(16)})
    ok = all(np.array_equal(a[d], pattern(t)[s]) for t, a in enumerate(host.numpy()) for s, d in mapping.items())
    untouched = all(not a[b].any() for a in host.numpy() for b in range(16) if b not in mapping.values())
    print("RESULT " + json.dumps({"bytes": bool(ok), "untouched": bool(untouched), "info": dd.link_info(1)}))
    dd.finalize()
""")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_pair(env, transport):
    port = free_port()
    prefill = subprocess.Popen([sys.executable, "-c", PREFILL, f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert prefill.stdout.readline().strip() == "ready", prefill.stderr.read()
        out = subprocess.run([sys.executable, "-c", DECODE, str(port), transport], capture_output=True, text=True,
                             timeout=60, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT "):])
    finally:
        prefill.kill()
        prefill.wait()


def base_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMDD_")}
    env.update(extra)
    return env


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_device_pulls_on_fake_cuda(tmp_path_factory, transport):
    lib = build_fake_cuda(tmp_path_factory.mktemp("fake_cuda"))
    result = run_pair(base_env(fake_cuda_env(lib)), transport)
    assert result["bytes"] and result["untouched"], result
    info = result["info"]
    if transport == "auto":
        assert info["transport"] == "shm" and info["cuda_ipc"] and info["cuda_ipc_opened"], info
    else:
        assert info["transport"] == "tcp" and not info["cuda_ipc_opened"], info
    assert info["pulls"] == 1 and info["bytes_pulled"] == 2 * 4 * 4096


@pytest.mark.cuda
@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_device_pulls_on_real_cuda(transport):
    probe = subprocess.run([sys.executable, "-c", "import llm_datadist as ld; print(ld._core.cuda_info()['available'])"],
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "True":
        pytest.skip("no usable CUDA device on this host")
    result = run_pair(base_env({}), transport)
    assert result["bytes"] and result["untouched"], result
    if transport == "auto":
        assert result["info"]["cuda_ipc_opened"], result["info"]
