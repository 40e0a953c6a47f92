# SPDX-License-Identifier: Apache-2.0
"""Our own core under the shim: device-placement caches on the CUDA backend (the fake driver on
CPU-only machines, the real one with `-m cuda`), device<->host block and cache copies failing
with an injected XID, and the retry helper getting past a transient fault with every byte right.

The transfer layer (a decode process pulling blocks from a prompt process) does not exist yet;
swap_blocks/copy_cache exercise the same batched device copy (cuda::MemcpyBatch) it will use."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from fault_harness import clean_env
from llm_datadist import fault_injection as fi

SCENARIO = textwrap.dedent("""
    import json, numpy as np, llm_datadist as ld
    from llm_datadist import CacheDesc, DataType, LLMException, Placement
    from llm_datadist import fault_injection as fi
    from llm_datadist.retry import retry

    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": 8 << 20})
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 8 << 20})
    cfg.device_backend = "cuda"
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2)
    dd.init(cfg.generate_options())
    cm = dd.cache_manager
    out = {"backend": dd.device_backend}
    rng = np.random.default_rng(7)

    blocks = lambda p: CacheDesc(2, [32, 4, 64], DataType.DT_FLOAT16, p)
    host, dev, back = (cm.allocate_blocks_cache(blocks(p)) for p in (Placement.HOST, Placement.DEVICE, Placement.HOST))
    payload = [rng.integers(0, 256, size=a.nbytes, dtype=np.uint8).reshape(32, -1) for a in host.numpy()]
    for a, p in zip(host.numpy(), payload):
        a.view(np.uint8).reshape(32, -1)[:] = p
    mapping = {i: (7 * i) % 32 for i in range(32)}   # scattered: no two copies coalesce

    def attempt(fn):
        try:
            fn()
            return {"ok": True}
        except LLMException as e:
            return {"code": e.status_code.name, "recoverable": e.recoverable, "action": e.action,
                    "context": e.context, "message": str(e)}

    pull = lambda: cm.swap_blocks(host, dev, mapping)           # host -> device blocks
    push = lambda: cm.swap_blocks(dev, back, {i: i for i in range(32)})  # device -> host

    with fi.armed(xid=48):
        out["pull_xid48"] = attempt(pull)
    with fi.armed(xid=48, functions="cuMemcpy*"):
        out["push_xid48_copy"] = attempt(push)
    with fi.armed(xid=79):
        out["pull_xid79"] = attempt(pull)

    contiguous = lambda p: CacheDesc(2, [4, 16, 64], DataType.DT_FLOAT16, p)
    h_cache, d_cache = cm.allocate_cache(contiguous(Placement.HOST)), cm.allocate_cache(contiguous(Placement.DEVICE))
    with fi.armed(xid=48, functions="cuMemcpyAsync"):
        out["copy_cache_h2d"] = attempt(lambda: cm.copy_cache(d_cache, h_cache, 1, 2))
    with fi.armed(xid=140, functions="cuMemcpyAsync"):
        out["copy_cache_d2h"] = attempt(lambda: cm.copy_cache(h_cache, d_cache, 0, 3))

    # A transient, retryable failure: the retry helper completes the pull.
    retries = []
    with fi.armed(code=701, transient=2, functions="cuMemcpyAsync"):
        retry(pull, base_delay=0.01, on_retry=lambda n, e, d: retries.append(
            [n, e.context.get("cuda_code"), e.recoverable, e.action]))
    out["retries"] = retries
    push()
    got = [a.view(np.uint8).reshape(32, -1) for a in back.numpy()]
    out["bytes_right"] = all(np.array_equal(g[d], p[s]) for g, p in zip(got, payload) for s, d in mapping.items())

    # A transient ECC error is still fatal: not retried.
    with fi.armed(xid=48, transient=2):
        out["ecc_transient"] = attempt(lambda: retry(pull, base_delay=0.01))

    out["shim"] = fi.shim_state()
    for c in (host, dev, back):
        cm.deallocate_blocks_cache(c)
    for c in (h_cache, d_cache):
        cm.deallocate_cache(c)
    dd.finalize()
    print("RESULT " + json.dumps(out))
""")

ENV_ARMED = textwrap.dedent("""
    import json, llm_datadist as ld
    from llm_datadist import CacheDesc, DataType, LLMException, Placement
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": 4 << 20})
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 4 << 20})
    cfg.device_backend = "cuda"
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2)
    dd.init(cfg.generate_options())
    cm = dd.cache_manager
    desc = lambda p: CacheDesc(1, [8, 256], DataType.DT_INT8, p)
    host, dev = cm.allocate_blocks_cache(desc(Placement.HOST)), cm.allocate_blocks_cache(desc(Placement.DEVICE))
    results = []
    for _ in range(3):
        try:
            cm.swap_blocks(host, dev, {0: 1, 2: 3})
            results.append("ok")
        except LLMException as e:
            results.append([e.status_code.name, e.context.get("xid"), e.context.get("cuda_call")])
    print("RESULT " + json.dumps(results))
""")


def _result(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def run_scenario(code, env):
    return _result(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=120, env=env))


def check_scenario(out):
    assert out["backend"] == "cuda"
    for key, xid, code, status in (("pull_xid48", 48, 214, "LLM_DEVICE_MEM_ERROR"),
                                   ("push_xid48_copy", 48, 214, "LLM_DEVICE_MEM_ERROR"),
                                   ("pull_xid79", 79, 999, "LLM_FAILED"),
                                   ("copy_cache_h2d", 48, 214, "LLM_DEVICE_MEM_ERROR"),
                                   ("copy_cache_d2h", 140, 214, "LLM_DEVICE_MEM_ERROR")):
        err = out[key]
        assert err.get("code") == status, (key, err)
        assert err["recoverable"] is False and err["action"] == "fatal", (key, err)
        assert err["context"]["xid"] == xid and err["context"]["fault_injected"] is True, (key, err)
        assert err["context"]["cuda_code"] == code, (key, err)
        assert f"[XID {xid}, injected by the CUDA fault shim]" in err["message"], (key, err)
    assert out["pull_xid48"]["context"]["cuda_error"] == "CUDA_ERROR_ECC_UNCORRECTABLE"
    assert "uncorrectable ECC error encountered" in out["pull_xid48"]["message"]
    # Aimed at the copies, the error names the device copy itself.
    for key in ("push_xid48_copy", "copy_cache_h2d", "copy_cache_d2h"):
        assert out[key]["context"]["cuda_call"] == "cuMemcpyAsync", out[key]
    assert out["copy_cache_h2d"]["context"]["operation"] == "copy_cache"

    assert out["retries"] == [[1, 701, True, "retry_later"], [2, 701, True, "retry_later"]]
    assert out["bytes_right"] is True

    ecc = out["ecc_transient"]
    assert ecc["code"] == "LLM_DEVICE_MEM_ERROR" and ecc["recoverable"] is False
    assert "attempts" not in ecc["context"], "a fatal error is not retried"
    assert out["shim"]["state"] == "off"


def test_core_surfaces_injected_faults_with_the_right_recoverability(fault_build):
    env = fi.env_for(None, base=clean_env(fault_build, shim=False, devices=1))
    check_scenario(run_scenario(SCENARIO, env))


def test_core_under_an_environment_armed_fault(fault_build):
    cfg = fi.FaultConfig(xid=48, functions="cuMemcpyAsync", after_calls=2)
    proc = fi.run([sys.executable, "-c", ENV_ARMED], cfg, env=clean_env(fault_build, shim=False, devices=1),
                  capture_output=True, text=True, timeout=120)
    # One swap = two scattered copies: the second swap is the first to fail, then it is latched
    # (whichever CUDA call the third swap makes first fails).
    first, second, third = _result(proc)
    assert first == "ok"
    assert second == ["LLM_DEVICE_MEM_ERROR", 48, "cuMemcpyAsync"]
    assert third[:2] == ["LLM_DEVICE_MEM_ERROR", 48]
    assert "event=fired xid=48 code=214 error=CUDA_ERROR_ECC_UNCORRECTABLE fn=cuMemcpyAsync" in proc.stderr


def _real_cuda_available(env) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import llm_datadist as ld; print(ld._core.cuda_info()['available'])"],
                           capture_output=True, text=True, timeout=120, env=env)
    return probe.stdout.strip() == "True"


@pytest.mark.cuda
def test_core_faults_on_real_cuda():
    env = fi.env_for(None)
    env.pop("LLMDD_CUDA_LIBRARY", None)
    if not _real_cuda_available(env):
        pytest.skip("no usable CUDA device on this host")
    check_scenario(run_scenario(SCENARIO, env))


TORCH_SCENARIO = textwrap.dedent("""
    import json, torch
    from llm_datadist import fault_injection as fi
    out = {}
    a = torch.randn(512, 512, device="cuda")
    b = a @ a
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    static = torch.zeros(512, 512, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(2):
            static.copy_(a @ a)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        static.copy_(a @ a)
    g.replay(); torch.cuda.synchronize()
    out["baseline"] = "ok"
    for name, step in (("matmul", lambda: (a @ a).sum().item()), ("graph", lambda: (g.replay(), torch.cuda.synchronize()))):
        try:
            with fi.armed(xid=48):
                step()
            out[name] = "no error"
        except RuntimeError as e:
            out[name] = str(e).splitlines()[0]
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.cuda
def test_pytorch_matmul_and_graph_replay_fail_under_the_armed_shim():
    torch_check = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                                 capture_output=True, text=True, timeout=120)
    if torch_check.stdout.strip() != "True":
        pytest.skip("no CUDA build of PyTorch with a usable GPU on this host")
    out = run_scenario(TORCH_SCENARIO, fi.env_for(None))
    assert out["baseline"] == "ok"
    for name in ("matmul", "graph"):
        assert "ECC" in out[name] or "CUDA error" in out[name], out
