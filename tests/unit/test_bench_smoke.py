# SPDX-License-Identifier: Apache-2.0
"""The transfer benchmark (benchmarks/bench_transfer.py) and the two-process demo keep working:
tiny sizes, 2 iterations, both transports, every byte verified, the JSON record's shape.

The parts that pull are skipped, with the reason, while this build's pulls raise
LLM_FEATURE_NOT_ENABLED (found by trying one pull, not by a flag)."""
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_transfer.py"
TINY = ["--pool-mib", "2", "--iters", "2", "--warmup", "1"]
CASES = ["a", "b", "c", "d"]

_PROBE = r"""
import json
import llm_datadist as ld
cfg = ld.LLMConfig()
cfg.device_id = 0
cfg.enable_cache_manager = True
cfg.host_mem_pool_cfg = json.dumps({"memory_size": 1 << 20})
dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2)
dd.init(cfg.generate_options())
try:
    cm = dd.cache_manager
    cache = cm.allocate_blocks_cache(ld.CacheDesc(1, [4, 4096], ld.DataType.DT_UINT8, ld.Placement.HOST))
    try:
        cm.pull_blocks(ld.BlocksCacheKey(1, 0), cache, [0], [0])   # no link: LLM_NOT_YET_LINK once pulls exist
        print("LLM_SUCCESS")
    except ld.LLMException as exc:
        print(exc.status_code.name)
        print(exc)
finally:
    dd.finalize()
"""


@functools.lru_cache(maxsize=None)
def _pull_probe():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"the pull probe crashed:\n{out.stdout}{out.stderr}"
    lines = out.stdout.strip().splitlines()
    return lines[0], " ".join(lines[1:])


def _skip_unless_pulls_work():
    name, message = _pull_probe()
    if name == "LLM_FEATURE_NOT_ENABLED":
        pytest.skip(f"pull_blocks raises LLM_FEATURE_NOT_ENABLED in this build (issue 3's transfer layer "
                    f"has not landed): {message}")


def _run_bench(tmp_path, *args, timeout=300):
    out_json = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, str(BENCH), *TINY, *args, "--out", str(out_json)], capture_output=True,
                         text=True, timeout=timeout, cwd=tmp_path)
    log = f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert out.returncode == 0, log
    assert "every byte verified" in out.stdout, log
    return json.loads(out_json.read_text()), out.stdout, log


def _check_record(rec, log):
    assert rec["schema"] == "llm_datadist.bench_transfer/1"
    assert "bench_transfer.py" in rec["command"]
    for key in ("nproc", "cpu_model", "kernel", "python", "numpy", "llm_datadist"):
        assert rec["machine"].get(key) not in (None, ""), (key, log)
    assert rec["config"]["pool_bytes"] == 2 << 20 and rec["config"]["check"] is True
    assert [c["name"] for c in rec["config"]["cases"]] == CASES
    assert rec["errors"] == 0, log
    for row in rec["rows"]:
        assert row["error"] == "", (row, log)
        assert row["verified"] is True, (row, log)
        assert len(row["times_us"]) == row["iters"] == 2, (row, log)
        assert row["median_us"] > 0 and row["GBps"] > 0
        assert row["bytes"] == row["nblocks"] * row["block_bytes"]


def test_bench_ceilings_only(tmp_path):
    """No link: the prefill child, the pattern, the slots, the memcpy/CMA ceilings and the checks."""
    rec, stdout, log = _run_bench(tmp_path, "--transport", "none")
    _check_record(rec, log)
    memcpy = {r["case"] for r in rec["rows"] if r["system"] == "memcpy"}
    assert memcpy == set(CASES), log
    assert not [r for r in rec["rows"] if r["system"] == "llm_datadist"]
    assert "memcpy" in stdout and "median us" in stdout


def test_bench_verification_catches_a_wrong_byte():
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_transfer as bt
    finally:
        sys.path.remove(str(BENCH.parent))
    import numpy as np
    pool = 1 << 20
    (case,) = bt.make_cases("8x16K", pool, 2, 1)
    pattern = bt.make_pattern(pool)
    remote, local = bt.slots_for(case, pool)
    dst = np.zeros(pool, dtype=np.uint8)
    dst.reshape(-1, case.block)[local] = pattern.reshape(-1, case.block)[remote]
    assert bt.verify_pool(case, pattern, dst, remote, local) == (True, "")
    dst[int(local[3]) * case.block + 7] ^= 0xFF
    assert bt.verify_pool(case, pattern, dst, remote, local)[0] is False
    dst[int(local[3]) * case.block + 7] ^= 0xFF
    untouched = sorted(set(range(pool // case.block)) - set(local.tolist()))[0]
    dst[untouched * case.block] = 1
    ok, detail = bt.verify_pool(case, pattern, dst, remote, local)
    assert not ok and "outside" in detail


def test_bench_pulls_both_transports(tmp_path):
    _skip_unless_pulls_work()
    rec, stdout, log = _run_bench(tmp_path, "--transport", "shm,tcp", "--placement", "host,device")
    _check_record(rec, log)
    assert [link.get("transport") for link in rec["links"]] == ["shm", "tcp"], (rec["links"], log)
    for link in rec["links"]:
        assert "error" not in link and "unlink_error" not in link, (link, log)
    # On a CUDA host, device rows of the shm link are labelled cuda_ipc.
    ours = {(r["transport"].replace("cuda_ipc", "shm"), r["placement"], r["case"]) for r in rec["rows"]
            if r["system"] == "llm_datadist"}
    assert ours == {(t, p, c) for t in ("shm", "tcp") for p in ("host", "device") for c in CASES}, log
    assert all(r["op"] == "pull_blocks" for r in rec["rows"] if r["system"] == "llm_datadist")
    names = [a["name"] for a in rec["acceptance"]]
    assert len(names) >= 6 and all(a["value"] is not None for a in rec["acceptance"]), rec["acceptance"]
    assert all(a["comparable"] is False for a in rec["acceptance"])      # tiny pool: not the reference cases
    assert "acceptance" in stdout


@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_demo_two_processes(transport):
    _skip_unless_pulls_work()
    code = ("import argparse, sys; from llm_datadist._demo import run_demo; "
            f"sys.exit(run_demo(argparse.Namespace(transport={transport!r}, device_backend=None, seed=0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    log = f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert out.returncode == 0, log
    assert "demo passed" in out.stdout and "FAIL" not in out.stdout, log
    for what in ("pull_cache CacheKey", "CacheKeyByIdAndIndex", "pull_blocks", "LLM_KV_CACHE_NOT_EXIST",
                 "unlink_clusters -> LLM_SUCCESS"):
        assert what in out.stdout, (what, log)
    expected = ("over tcp",) if transport == "tcp" else ("over shm", "over cuda_ipc")   # cuda_ipc on a GPU host
    assert any(e in out.stdout for e in expected), log
