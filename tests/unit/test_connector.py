# SPDX-License-Identifier: Apache-2.0
"""The connector's typed metadata, versioned handshake and scheduler half (no processes, no
torch); role errors; the worker half's lease and load-error bookkeeping on a real LLMDataDist."""
from __future__ import annotations

import dataclasses
import json
import time

import pytest

import llm_datadist as ld
from llm_datadist import LLMException, LLMStatusCode
from llm_datadist.integrations import (CONNECTOR_VERSION, AgentMetadata, ConnectorConfig, ConnectorMetadata,
                                       HealthRegistry, KVCacheLayout, KVConnectorRole, LLMDataDistConnector,
                                       PeerState, RemoteMeta, Request, WorkerMetadata, compute_compatibility_hash,
                                       decode_handshake, encode_handshake)

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


def test_scheduler_half_prefill_and_decode():
    cfg = ConnectorConfig(LAYOUT, cluster_id=101, port=26000, free_timeout_s=5.0)
    prefill = LLMDataDistConnector(KVConnectorRole.SCHEDULER, cfg)
    req = Request("r1", list(range(40)), {"do_remote_decode": True})
    t0 = time.monotonic()
    delay, params = prefill.request_finished(req, [7, 8, 9])
    assert delay is True and params["do_remote_prefill"] and params["remote_block_ids"] == [7, 8, 9]
    meta = prefill.build_connector_meta()
    assert set(meta.reqs_to_send) == {"r1"} and t0 + 4.9 <= meta.reqs_to_send["r1"] <= time.monotonic() + 5.0
    assert prefill.build_connector_meta() == ConnectorMetadata()        # drained
    assert prefill.request_finished(Request("r2", [1], None), [1]) == (False, None)

    decode = LLMDataDistConnector(KVConnectorRole.SCHEDULER, ConnectorConfig(LAYOUT, cluster_id=201))
    dreq = Request("r1", list(range(40)), params)
    assert decode.get_num_new_matched_tokens(dreq, 0) == (40, False)
    assert decode.get_num_new_matched_tokens(Request("x", [1, 2], None), 0) == (0, False)
    decode.update_state_after_alloc(dreq, [3, 4, 5, 6], 40)            # 40 tokens: 3 blocks loaded
    meta = decode.build_connector_meta()
    rm = meta.reqs_to_recv["r1"]
    assert rm.local_block_ids == [3, 4, 5] and rm.remote == RemoteMeta(101, "127.0.0.1", 26000, [7, 8, 9])
    assert dreq.kv_transfer_params["do_remote_prefill"] is False       # loaded once
    with pytest.raises(LLMException) as e:
        decode.update_state_after_alloc(Request("r3", list(range(40)), dict(params, do_remote_prefill=True)), [1], 40)
    assert e.value.status_code == LLMStatusCode.LLM_PARAM_INVALID


def test_wrong_role_is_a_real_error():
    sched = LLMDataDistConnector(KVConnectorRole.SCHEDULER, ConnectorConfig(LAYOUT, cluster_id=1))
    with pytest.raises(LLMException) as e:
        sched.start_load_kv()
    assert e.value.status_code == LLMStatusCode.LLM_PARAM_INVALID and "worker-side" in str(e.value)
    with pytest.raises(ValueError):
        LLMDataDistConnector(KVConnectorRole.WORKER, ConnectorConfig(LAYOUT, cluster_id=1))
    with pytest.raises(TypeError):
        LLMDataDistConnector("worker", ConnectorConfig(LAYOUT, cluster_id=1))


def test_worker_metadata_aggregate():
    a = WorkerMetadata({"a"}, {"b"}, {1})
    b = WorkerMetadata({"c"}, set(), {2, 1})
    assert a.aggregate(b) == WorkerMetadata({"a", "c"}, {"b"}, {1, 2})


def test_worker_half_leases_and_load_errors(datadist):
    """A prefill-side lease is freed by a confirmation or by its deadline; a pull from a peer
    we are not linked to is reported as block ids (not raised), logged, and fed to health."""
    cm = datadist.cache_manager
    cache = cm.allocate_blocks_cache(ld.CacheDesc(LAYOUT.num_tensors, LAYOUT.tensor_shape(8), ld.DataType.DT_FLOAT,
                                                  ld.Placement.HOST))
    health = HealthRegistry()
    cfg = ConnectorConfig(LAYOUT, cluster_id=1, retry_attempts=2)
    w = LLMDataDistConnector(KVConnectorRole.WORKER, cfg, datadist, health)
    w.register_kv_caches(cache)
    now = time.monotonic()
    w.bind_connector_metadata(ConnectorMetadata(reqs_to_send={"a": now + 60, "b": now - 1}))
    assert w.get_finished(set()) == ({"b"}, None)                       # b expired
    assert w.worker.expired == {"b"} and w.worker.held_requests() == ["a"]
    w.bind_connector_metadata(ConnectorMetadata(reqs_consumed={"a"}))
    assert w.get_finished(set()) == ({"a"}, None)                       # a confirmed

    sched = LLMDataDistConnector(KVConnectorRole.SCHEDULER, cfg)
    req = Request("r9", list(range(20)), RemoteMeta(55, "127.0.0.1", 1, [0, 1]).to_params())
    n, _ = sched.get_num_new_matched_tokens(req, 0)
    sched.update_state_after_alloc(req, [4, 5, 6], n)
    w.bind_connector_metadata(sched.build_connector_meta())
    w.start_load_kv()                                                  # must not raise
    assert w.get_block_ids_with_load_errors() == {4, 5}
    assert w.get_block_ids_with_load_errors() == set()                 # reported once
    assert w.get_finished(set()) == (None, {"r9"})
    rec = w.worker.transfers["r9"]
    assert rec.ok is False and rec.error["code"] == "LLM_NOT_YET_LINK" and rec.error["request_id"] == "r9"
    assert rec.attempts == 1                                           # not retryable: not retried
    assert health.peer(55).state is PeerState.RELINKING                 # action "relink"
    cm.deallocate_blocks_cache(cache)
