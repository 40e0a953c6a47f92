# SPDX-License-Identifier: Apache-2.0
"""The connector core's typed metadata, versioned handshake and scheduler half (no processes,
no torch); the worker half's lease expiry and load-error bookkeeping on a real LLMDataDist;
vLLM stays optional. The consumed notice between processes is tested with real processes in
tests/integration/test_disaggregated.py and tests/vllm_connector/."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest

import llm_datadist as ld
from llm_datadist import LLMException, LLMStatusCode
from llm_datadist.integrations import (CONNECTOR_VERSION, AgentMetadata, ConnectorConfig, ConnectorMetadata,
                                       ConnectorScheduler, ConnectorWorker, HealthRegistry, KVCacheLayout,
                                       LandingRecord, PeerState, PushMeta, RemoteMeta, SendLease,
                                       compute_compatibility_hash, decode_handshake, encode_handshake, push_ticket_id,
                                       ticket_id_of)

LAYOUT = KVCacheLayout(num_layers=4, num_kv_heads=4, head_dim=32, block_size=16, dtype="DT_FLOAT")


def agent(layout=LAYOUT, **kw):
    base = dict(cluster_id=101, host="127.0.0.1", port=26000, model_id=0, num_blocks=256, layout=layout,
                model_name="tiny")
    base.update(kw)
    return AgentMetadata(**base)


def test_hash_covers_layout_factors_only():
    h = compute_compatibility_hash(LAYOUT)
    assert h == compute_compatibility_hash(KVCacheLayout(4, 4, 32, 16, "DT_FLOAT"))
    for change in ({"num_layers": 5}, {"num_kv_heads": 8}, {"head_dim": 64}, {"block_size": 32},
                   {"dtype": "DT_BF16"}, {"tensors_per_layer": 1}, {"tensor_order": "k_then_v"}):
        assert compute_compatibility_hash(dataclasses.replace(LAYOUT, **change)) != h, change
    assert compute_compatibility_hash(LAYOUT, version=CONNECTOR_VERSION + 1) != h
    # addressing and pool size are not layout: same hash
    assert encode_handshake(agent(port=1, num_blocks=8)).compatibility_hash == h


def test_handshake_round_trip_through_json():
    payload = encode_handshake(agent())
    wire = json.loads(json.dumps(payload.to_dict()))
    got = decode_handshake(wire, compute_compatibility_hash(LAYOUT), "tiny")
    assert got == agent()


@pytest.mark.parametrize("mutate, words", [
    (lambda p: {**p, "version": CONNECTOR_VERSION + 1}, "connector version mismatch"),
    (lambda p: {**p, "compatibility_hash": "0" * 64}, "layout mismatch"),
    (lambda p: {**p, "agent_metadata": "{not json"}, "could not be decoded"),
    (lambda p: "not a dict", "must be a dict"),
])
def test_handshake_refusals_are_link_failed(mutate, words):
    payload = mutate(encode_handshake(agent()).to_dict())
    with pytest.raises(LLMException) as e:
        decode_handshake(payload, compute_compatibility_hash(LAYOUT))
    assert e.value.status_code == LLMStatusCode.LLM_LINK_FAILED and words in str(e.value)
    assert e.value.recoverable is False and e.value.to_dict()["stage"] == "connector_handshake"


def test_hash_checked_before_decoding():
    # an incompatible payload whose body is garbage: the hash refusal comes first
    payload = {"version": CONNECTOR_VERSION, "compatibility_hash": "f" * 64, "agent_metadata": "garbage"}
    with pytest.raises(LLMException, match="layout mismatch"):
        decode_handshake(payload, compute_compatibility_hash(LAYOUT))


def test_model_name_checked():
    with pytest.raises(LLMException, match="model mismatch"):
        decode_handshake(encode_handshake(agent()).to_dict(), compute_compatibility_hash(LAYOUT), "other")


class Request:
    """The fields of an engine request the scheduler half reads."""

    def __init__(self, request_id, prompt_token_ids, kv_transfer_params):
        self.request_id, self.prompt_token_ids, self.kv_transfer_params = request_id, prompt_token_ids, kv_transfer_params


def test_scheduler_half_prefill_and_decode():
    cfg = ConnectorConfig(LAYOUT, cluster_id=101, port=26000, engine_id="p0", free_timeout_s=5.0)
    prefill = ConnectorScheduler(cfg)
    prefill.set_handshake({"version": CONNECTOR_VERSION, "compatibility_hash": "h", "agent_metadata": "{}"})
    req = Request("r1", list(range(40)), {"do_remote_decode": True})
    t0 = time.time()
    delay, params = prefill.request_finished(req, [7, 8, 9])
    assert delay is True and params["do_remote_prefill"] and params["remote_block_ids"] == [7, 8, 9]
    assert params["remote_engine_id"] == "p0" and params["remote_ticket_id"] == ticket_id_of("p0", "r1")
    assert t0 + 4.9 <= params["remote_blocks_expiry_time"] <= time.time() + 5.0
    assert params["remote_handshake"]["compatibility_hash"] == "h"
    json.dumps(params)                                                  # travels with the request as JSON
    meta = prefill.build_connector_meta()
    assert meta.reqs_to_send == {"r1": SendLease(params["remote_ticket_id"], params["remote_blocks_expiry_time"])}
    assert prefill.build_connector_meta() == ConnectorMetadata()        # drained
    assert prefill.request_finished(Request("r2", [1], None), [1]) == (False, None)
    assert ticket_id_of("p0", "r1") != ticket_id_of("p1", "r1") and ticket_id_of("p0", "r1") < 2**63

    decode = ConnectorScheduler(ConnectorConfig(LAYOUT, cluster_id=201))
    dreq = Request("r1", list(range(40)), dict(params))
    assert decode.get_num_new_matched_tokens(dreq, 0) == (40, True)     # asynchronous
    assert decode.get_num_new_matched_tokens(dreq, 40) == (0, False)
    assert decode.get_num_new_matched_tokens(Request("x", [1, 2], None), 0) == (0, False)
    decode.update_state_after_alloc(dreq, [3, 4, 5], 40)
    rm = decode.build_connector_meta().reqs_to_recv["r1"]
    assert rm.local_block_ids == [3, 4, 5] and rm.remote == RemoteMeta.from_params(params)
    assert dreq.kv_transfer_params["do_remote_prefill"] is False       # loaded once
    # a local prefix hit covered the first block: the tails line up
    hit = Request("r4", list(range(40)), dict(params))
    decode.update_state_after_alloc(hit, [11, 12], 24)
    rm = decode.build_connector_meta().reqs_to_recv["r4"]
    assert rm.local_block_ids == [11, 12] and rm.remote.block_ids == [8, 9]


def test_scheduler_half_push_mode():
    """Push mode: the decode's request names the prefill and waits for a push into its blocks;
    the prefill's is queued for the step that computes its prompt and held until confirmed."""
    params = {"kv_mode": "push", "transfer_id": "t-1"}
    decode = ConnectorScheduler(ConnectorConfig(LAYOUT, cluster_id=201, mode="push"))
    dreq = Request("d-1", list(range(40)), dict(params, do_remote_prefill=True, remote_cluster_id=101,
                                                remote_host="127.0.0.1", remote_port=26000))
    assert decode.get_num_new_matched_tokens(dreq, 0) == (40, True)
    decode.update_state_after_alloc(dreq, [3, 4, 5], 40)
    rm = decode.build_connector_meta().reqs_to_recv["d-1"]
    assert rm.push and rm.local_block_ids == [3, 4, 5] and rm.prompt_tokens == 40
    assert rm.remote.cluster_id == 101 and rm.remote.block_ids == [] and rm.remote.ticket_id == push_ticket_id("t-1")

    prefill = ConnectorScheduler(ConnectorConfig(LAYOUT, cluster_id=101, port=26000, free_timeout_s=5.0, mode="push"))
    preq = Request("p-1", list(range(40)), dict(params, do_remote_decode=True, remote_cluster_id=201))
    assert prefill.is_push_prefill(preq) and not prefill.is_push_prefill(Request("x", [1], {"do_remote_decode": 1}))
    prefill.queue_push(preq, [7, 8, 9])
    push = prefill.build_connector_meta().reqs_to_push["p-1"]
    assert isinstance(push, PushMeta) and push.block_ids == [7, 8, 9] and push.decode_cluster_id == 201
    assert push.ticket_id == push_ticket_id("t-1") and push.prompt_tokens == 40
    assert prefill.request_finished(preq, [7, 8, 9]) == (True, None)    # held until the push is confirmed


def test_landing_record_round_trip_and_refusals():
    h = compute_compatibility_hash(LAYOUT)
    data = LandingRecord.encode(h, [5, 2**40, 0], 4)
    assert len(data) == LandingRecord.size_for(4) == LandingRecord.HEADER + 32
    assert LandingRecord.decode(data, h) == [5, 2**40, 0]
    with pytest.raises(ValueError, match="do not fit"):
        LandingRecord.encode(h, [1, 2, 3], 2)
    other = compute_compatibility_hash(dataclasses.replace(LAYOUT, block_size=32))
    for bad, words in ((data, "layout mismatch"), (b"x" * 10, "shorter than"), (b"NOTMAGIC" + data[8:], "magic"),
                       (data[:LandingRecord.HEADER + 8], "holds")):
        with pytest.raises(LLMException) as e:
            LandingRecord.decode(bad, other if words == "layout mismatch" else h)
        assert e.value.status_code == LLMStatusCode.LLM_LINK_FAILED and words in str(e.value), (words, e.value)


def test_worker_half_expiry_and_load_errors(datadist):
    """A prefill-side lease whose ticket nobody pulled is freed at its expiry (its key
    removed); a load from a prefill we cannot link to is reported as block ids (not raised)
    in the same get_finished round as the request, logged, and fed to health."""
    cm = datadist.cache_manager
    cache = cm.allocate_blocks_cache(ld.CacheDesc(LAYOUT.num_tensors, LAYOUT.tensor_shape(8), ld.DataType.DT_FLOAT,
                                                  ld.Placement.HOST))
    health = HealthRegistry()
    cfg = ConnectorConfig(LAYOUT, cluster_id=1, retry_attempts=2)
    w = ConnectorWorker(cfg, datadist, health)
    w.register_kv_caches(cache)
    keys_before = datadist._engine.key_count()
    w.bind_connector_metadata(ConnectorMetadata(reqs_to_send={"a": SendLease(11, time.time() + 60),
                                                               "b": SendLease(12, time.time() - 1)}))
    assert datadist._engine.key_count() == keys_before + 2            # two tickets armed
    assert w.get_finished() == ({"b"}, set())                           # b expired
    assert w.expired == {"b"} and w.held_requests() == ["a"]
    assert datadist._engine.key_count() == keys_before + 1            # its ticket went with it

    sched = ConnectorScheduler(cfg)
    req = Request("r9", list(range(20)), RemoteMeta(55, "127.0.0.1", 1, [0, 1]).to_params())
    n, _ = sched.get_num_new_matched_tokens(req, 0)
    sched.update_state_after_alloc(req, [4, 5], n)
    w.bind_connector_metadata(sched.build_connector_meta())
    w.start_load_kv()                                                  # returns; the load runs on its thread
    deadline = time.monotonic() + 10
    recving = set()
    while "r9" not in recving and time.monotonic() < deadline:
        recving |= w.get_finished()[1]
        time.sleep(0.01)
    assert recving == {"r9"}
    assert w.get_block_ids_with_load_errors() == {4, 5}
    assert w.get_block_ids_with_load_errors() == set()                 # reported once
    rec = w.pop_transfer("r9")
    assert rec.ok is False and rec.error["code"] == "LLM_LINK_FAILED" and rec.error["request_id"] == "r9"
    assert "no handshake" in rec.error["message"]
    assert health.peer(55).state is not PeerState.ACTIVE
    w.shutdown()
    cm.deallocate_blocks_cache(cache)


def test_vllm_stays_optional():
    """import llm_datadist (and its integrations) never imports vLLM; without vLLM the vLLM
    connector's module says what is missing and which version is pinned."""
    code = ("import sys, llm_datadist, llm_datadist.integrations; "
            "assert 'vllm' not in sys.modules, sorted(m for m in sys.modules if 'vllm' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError) as e:
            import llm_datadist.integrations.vllm  # noqa: F401
        assert "vLLM 0.34.0" in str(e.value) and "pip install --no-deps vllm==0.34.0" in str(e.value)
    else:
        pytest.skip("vLLM is installed here; the missing-vLLM message is checked in venvs without it")
