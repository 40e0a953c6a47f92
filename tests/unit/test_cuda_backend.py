# SPDX-License-Identifier: Apache-2.0
"""Cache operations with Placement.DEVICE on the CUDA backend: the device pool is one CUDA
allocation and copies are batched device copies. On CPU-only machines this runs against the fake
driver (fault_injection/fake_cuda); with `-m cuda` on a GPU host the same scenario runs against
the real driver. Each case runs in a subprocess because the loaded driver is process-wide."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fake_cuda import build_fake_cuda, fake_cuda_env  # noqa: E402

SCENARIO = textwrap.dedent("""
    import json, numpy as np, llm_datadist as ld
    from llm_datadist import CacheDesc, CacheKey, DataType, Placement, LLMException

    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": 32 << 20})
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 32 << 20})
    cfg.device_backend = "cuda"
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    dd.init(cfg.generate_options())
    cm = dd.cache_manager
    result = {"backend": dd.device_backend}
    rng = np.random.default_rng(3)

    # host -> device -> device -> host, one slot each, every byte compared
    desc = lambda p: CacheDesc(4, [4, 32, 64], DataType.DT_FLOAT16, p)
    h_src, h_dst = cm.allocate_cache(desc(Placement.HOST)), cm.allocate_cache(desc(Placement.HOST))
    d1 = cm.allocate_cache(desc(Placement.DEVICE), [CacheKey(1, 5)])
    d2 = cm.allocate_cache(desc(Placement.DEVICE))
    src = [rng.integers(0, 256, size=a.nbytes, dtype=np.uint8) for a in h_src.numpy()]
    for a, s in zip(h_src.numpy(), src):
        a.view(np.uint8).reshape(-1)[:] = s
    cm.copy_cache(d1, h_src, 1, 2)
    cm.copy_cache(d2, d1, 3, 1)
    cm.copy_cache(h_dst, d2, 0, 3)
    slot = desc(Placement.HOST).size // 4
    result["copy_cache"] = all(np.array_equal(a.view(np.uint8).reshape(4, slot)[0], s.reshape(4, slot)[2])
                               for a, s in zip(h_dst.numpy(), src))
    try:
        d1.numpy(0)
        result["numpy_on_cuda"] = "no error"
    except LLMException as e:
        result["numpy_on_cuda"] = e.status_code.name

    # paged blocks: swap out, copy on device, swap in
    bdesc = lambda p, n: CacheDesc(2, [n, 16, 8, 16], DataType.DT_BF16, p)
    dev = cm.allocate_blocks_cache(bdesc(Placement.DEVICE, 32))
    host = cm.allocate_blocks_cache(bdesc(Placement.HOST, 32))
    back = cm.allocate_blocks_cache(bdesc(Placement.HOST, 32))
    payload = [rng.integers(0, 256, size=a.nbytes, dtype=np.uint8).reshape(32, -1) for a in host.numpy()]
    for a, p in zip(host.numpy(), payload):
        a.view(np.uint8).reshape(32, -1)[:] = p
    cm.swap_blocks(host, dev, {i: 31 - i for i in range(32)})
    cm.copy_blocks(dev, {31: [0]})
    cm.swap_blocks(dev, back, {i: i for i in range(32)})
    ok = True
    for a, p in zip(back.numpy(), payload):
        got = a.view(np.uint8).reshape(32, -1)
        ok &= all(np.array_equal(got[31 - i], p[i]) for i in range(0, 31)) and np.array_equal(got[0], p[0])
    result["blocks"] = bool(ok)

    stats = cm.pool_stats(Placement.DEVICE)
    result["device_pool_capacity"] = stats["capacity"]
    cm.remove_cache_key(CacheKey(1, 5))
    for c in (h_src, h_dst, d1, d2):
        cm.deallocate_cache(c)
    for c in (dev, host, back):
        cm.deallocate_blocks_cache(c)
    result["device_used_after"] = cm.pool_stats(Placement.DEVICE)["used_bytes"]
    dd.finalize()
    print("RESULT " + json.dumps(result))
""")

OOM_SCENARIO = textwrap.dedent("""
    import json, llm_datadist as ld
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": 64 << 20})
    cfg.device_backend = "cuda"
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    try:
        dd.init(cfg.generate_options())
        print("RESULT " + json.dumps({"code": "none"}))
    except ld.LLMException as e:
        print("RESULT " + json.dumps({"code": e.status_code.name, "msg": str(e), "action": e.action}))
""")


def run_scenario(code, extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMDD_")}
    env.update(extra_env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def check_result(result):
    assert result["backend"] == "cuda"
    assert result["copy_cache"] is True
    assert result["blocks"] is True
    assert result["numpy_on_cuda"] == "LLM_PARAM_INVALID"
    assert result["device_pool_capacity"] == 32 << 20
    assert result["device_used_after"] == 0


def test_cache_ops_on_fake_cuda(tmp_path_factory):
    lib = build_fake_cuda(tmp_path_factory.mktemp("fake_cuda"))
    check_result(run_scenario(SCENARIO, fake_cuda_env(lib)))


def test_device_pool_larger_than_device_is_device_out_of_memory(tmp_path_factory):
    lib = build_fake_cuda(tmp_path_factory.mktemp("fake_cuda"))
    result = run_scenario(OOM_SCENARIO, fake_cuda_env(lib, mem_limit=16 << 20))
    assert result["code"] == "LLM_DEVICE_OUT_OF_MEMORY", result
    assert "67108864 bytes" in result["msg"] and result["action"] == "free_memory"


@pytest.mark.cuda
def test_cache_ops_on_real_cuda():
    probe = subprocess.run([sys.executable, "-c", "import llm_datadist as ld; print(ld._core.cuda_info()['available'])"],
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "True":
        pytest.skip("no usable CUDA device on this host")
    check_result(run_scenario(SCENARIO, {}))
