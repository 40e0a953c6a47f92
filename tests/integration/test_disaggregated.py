# SPDX-License-Identifier: Apache-2.0
"""Disaggregated serving of a real (small) transformer through llm_datadist (issue 6): 2 prefill
+ 2 decode worker processes, tokens checked against the monolithic run, transferred KV checked
byte for byte (sha256 of whole blocks on both sides), and the failure paths: a killed prefill,
a frozen prefill (SIGSTOP), a transient CUDA fault on the fake CUDA driver under the shim.

Every wait is bounded; Cluster.close() (in a finally) SIGKILLs what did not quit."""
from __future__ import annotations

import glob
import json
import os
import signal
import sys
import threading
import time

import pytest

torch = pytest.importorskip("torch", reason="the serve demo's model needs torch")

from llm_datadist._serve_demo.driver import Cluster  # noqa: E402
from llm_datadist._serve_demo.model import ModelConfig, TinyDecoder, generate_monolithic, make_prompts  # noqa: E402
from llm_datadist.integrations import PeerState  # noqa: E402

MAX_NEW = 6
CFG = ModelConfig()


def prompts(n: int, seed: int):
    return make_prompts(n, seed, CFG.vocab_size, 3, 70)


def reference(ps):
    torch.set_num_threads(1)
    return generate_monolithic(TinyDecoder(CFG), ps, MAX_NEW)


def error_lines(log_dir: str):
    out = []
    for path in glob.glob(os.path.join(log_dir, "*.log")):
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    return out


def wait_until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.timeout(120)
def test_2p2d_tokens_and_kv_match_monolithic(tmp_path):
    ps = prompts(16, 0)
    ref = reference(ps)
    with Cluster(2, 2, CFG.to_dict(), log_dir=str(tmp_path)) as c:
        res = c.run(ps, MAX_NEW)
        assert set(c.transports.values()) == {"shm"}, c.transports
        # the decode confirmed every request: both prefills freed every block
        wait_until(lambda: all(not w.call("stats", timeout=10)["held"] for w in c.prefills.values()), 10,
                   "the prefills to free the consumed blocks")
    assert [r.tokens for r in res] == ref
    assert {r.prefill_worker for r in res} == {101, 102} and {r.decode_worker for r in res} == {201, 202}
    assert all(r.kv_source == "pulled" and r.kv_equal is True for r in res), [(r.request_id, r.kv_source) for r in res]
    assert all(r.transfer["ok"] and r.transfer["attempts"] == 1 for r in res)
    assert all(r.prefill_ms > 0 and r.transfer_ms > 0 and r.first_decode_ms > 0 and r.ttft_ms >= r.prefill_ms
               for r in res)


@pytest.mark.timeout(120)
def test_gqa_model_over_tcp_matches_monolithic(tmp_path):
    # GQA (2 KV heads for 4 query heads) changes the cache layout the connector hashes and the
    # blocks it moves; tcp sends them through the owner's stream path instead of shared memory.
    cfg = ModelConfig(num_kv_heads=2)
    ps = make_prompts(8, 3, cfg.vocab_size, 3, 70)
    torch.set_num_threads(1)
    ref = generate_monolithic(TinyDecoder(cfg), ps, MAX_NEW)
    assert ref != reference(ps), "the GQA model should differ from the MHA one"
    env = dict(os.environ, LLMDD_TRANSPORT="tcp")
    with Cluster(1, 1, cfg.to_dict(), log_dir=str(tmp_path), decode_env=env, prefill_env=env) as c:
        res = c.run(ps, MAX_NEW)
        assert set(c.transports.values()) == {"tcp"}, c.transports
    assert [r.tokens for r in res] == ref
    assert all(r.kv_source == "pulled" and r.kv_equal is True for r in res), [(r.request_id, r.kv_source) for r in res]


def test_model_config_rejects_kv_heads_that_do_not_divide_the_heads(capsys):
    with pytest.raises(ValueError, match="num_kv_heads must divide num_heads"):
        ModelConfig(num_kv_heads=3)
    from llm_datadist.cli import main
    assert main(["serve-demo", "--kv-heads", "3"]) == 2  # a one-line error, no traceback, no workers
    assert "--kv-heads: num_kv_heads must divide num_heads (4), but got 3" in capsys.readouterr().err


@pytest.mark.timeout(150)
def test_killed_prefill_rerouted_halted_then_relinked(tmp_path):
    ps = prompts(16, 1)
    ref = reference(ps)
    killed = threading.Event()
    seen = []

    def on_prefilled(rid, w):
        if w.cluster_id == 101 and not killed.is_set():
            seen.append(rid)
            if len(seen) == 2:                      # mid-run: after P0's second prefill
                killed.set()
                w.kill(signal.SIGKILL)
                time.sleep(0.3)                     # the decode notices the closed link (< 100 ms)

    with Cluster(2, 2, CFG.to_dict(), log_dir=str(tmp_path), prefill_timeout_s=5.0) as c:
        res = c.run(ps, MAX_NEW, concurrency=3, on_prefilled=on_prefilled)
        assert killed.is_set()
        assert [r.tokens for r in res] == ref
        victim = [r for r in res if r.request_id == seen[-1]][0]
        # its pull failed (link to a dead peer): reported as block ids, recomputed on the decode
        assert victim.kv_source == "recomputed_after_load_error", victim
        assert victim.transfer["ok"] is False and victim.transfer["error"]["code"] == "LLM_LINK_FAILED"
        assert victim.load_error_blocks
        assert all(r.kv_equal is not False for r in res)
        assert c.wait_state(101, PeerState.HALTED, 15), c.health.peer(101).snapshot()
        assert c.health.peer(102).state is PeerState.ACTIVE
        # nothing is routed to the halted prefill
        after = c.run(prompts(4, 2), MAX_NEW, prefix="halted")
        assert all(r.prefill_worker == 102 for r in after)
        # restarted on the same port: relinked by every decode, ACTIVE, and used again
        c.restart_prefill(0)
        assert c.wait_state(101, PeerState.ACTIVE, 20), c.health.peer(101).snapshot()
        states = [to for _, to, _ in c.health.peer(101).history]
        assert "HALTED" in states and states[-1] == "ACTIVE", states
        ps2 = prompts(8, 3)
        res2 = c.run(ps2, MAX_NEW, prefix="back")
        assert [r.tokens for r in res2] == reference(ps2)
        assert 101 in {r.prefill_worker for r in res2}
        assert all(r.kv_equal is True for r in res2)
    errors = [e for e in error_lines(str(tmp_path)) if isinstance(e.get("error"), dict)]
    assert any(e.get("request_id") == victim.request_id and e["error"].get("code") == "LLM_LINK_FAILED"
               and "recoverable" in e["error"] and "action" in e["error"] for e in errors), errors[:5]


@pytest.mark.timeout(150)
def test_frozen_prefill_times_out_and_requests_complete_elsewhere(tmp_path):
    ps = prompts(12, 4)
    ref = reference(ps)
    frozen = threading.Event()
    victim = []

    def on_prefilled(rid, w):
        if w.cluster_id == 101 and not frozen.is_set():
            frozen.set()
            victim.append(rid)
            w.kill(signal.SIGSTOP)
            time.sleep(0.6)         # > 400 ms: one-sided reads stop; the pull asks the frozen owner

    with Cluster(2, 2, CFG.to_dict(), log_dir=str(tmp_path), sync_kv_timeout_ms=1000, link_timeout_ms=1000,
                 prefill_timeout_s=2.0) as c:
        try:
            res = c.run(ps, MAX_NEW, concurrency=3, on_prefilled=on_prefilled)
            assert [r.tokens for r in res] == ref
            v = [r for r in res if r.request_id == victim[0]][0]
            assert v.transfer["ok"] is False and v.transfer["error"]["code"] == "LLM_TIMEOUT", v.transfer
            assert 0.9 <= v.transfer["elapsed_s"] < 5.0, v.transfer          # at sync_kv_timeout, not retried
            assert v.transfer["attempts"] == 1
            assert v.kv_source == "recomputed_after_load_error"
            # later requests were not served by the frozen prefill
            assert all(r.prefill_worker == 102 for r in res if r.failed_prefills), res
            assert not c.health.peer(101).routable
            assert c.health.peer(102).state is PeerState.ACTIVE
        finally:
            c.prefill_by_index(0).kill(signal.SIGCONT)
        # thawed: answers pings again, relinked, ACTIVE
        assert c.wait_state(101, PeerState.ACTIVE, 20), c.health.peer(101).snapshot()


# ---- a transient CUDA fault on the fake CUDA driver -------------------------------------------

@pytest.fixture(scope="module")
def fault_build(tmp_path_factory):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fault"))
    from fault_harness import build_all
    return build_all(tmp_path_factory.mktemp("fault_build"))


@pytest.mark.timeout(120)
def test_transient_cuda_fault_retried_tokens_match(tmp_path, fault_build):
    from fault_harness import clean_env

    from llm_datadist import fault_injection as fi
    # decodes: fake CUDA driver, the shim preloaded (disarmed); their pulls land in a (fake)
    # CUDA device blocks cache and are copied to the host cache the CPU model reads.
    decode_env = fi.env_for(None, base=clean_env(fault_build, shim=False, devices=1))
    ps = prompts(6, 5)
    ref = reference(ps)
    drill = {"code": 701, "transient": 2, "functions": "cuMemcpy*"}
    with Cluster(2, 2, CFG.to_dict(), log_dir=str(tmp_path), decode_env=decode_env, stage_device=True) as c:
        res = c.run(ps, MAX_NEW, inject_fault={"req-1": drill, "req-4": drill})
        states = {cid: c.health.peer(cid).state for cid in (101, 102)}
    assert [r.tokens for r in res] == ref
    assert all(r.kv_source == "pulled" and r.kv_equal is True for r in res)
    for r in res:
        expected = 3 if r.request_id in ("req-1", "req-4") else 1    # two injected failures, then success
        assert r.transfer["ok"] and r.transfer["attempts"] == expected, (r.request_id, r.transfer)
    assert set(states.values()) == {PeerState.ACTIVE}
    retries = [e for e in error_lines(str(tmp_path)) if "load_retry" in str(e.get("message", ""))]
    assert len(retries) == 4 and all(e["error"]["action"] == "retry_later" for e in retries), retries
