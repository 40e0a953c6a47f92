# SPDX-License-Identifier: Apache-2.0
"""LLMDataDistConnector driven by vLLM's own Scheduler: a prefill process and a decode process
(tests/vllm_connector/vllm_side.py) each run requests through scheduling steps, with CPU tensors standing
in for the GPU KV cache and a stand-in model runner that writes, per token, bytes naming who
computed them. Checked: the decode's blocks hold the prefill's bytes exactly (sha256 of every
block, against the prefill's and against what the prefill must have written), completion
reported asynchronously through get_finished, the prefill's blocks freed after the consumed
notice and, without one, after the expiry; a killed prefill gives load-error blocks that the
decode's scheduler recomputes; a peer of another layout is refused naming both hashes."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (requirements/vllm-test.txt; README, 'vLLM')")
pytest.importorskip("llm_datadist.integrations.vllm")

from vllm_fixtures import init_side  # noqa: E402
from workers import free_port  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

FREE_TIMEOUT_S = 4.0
PROMPT = list(range(3, 3 + 40))           # 40 tokens: 3 blocks of 16, the last one partial
STEP_DEADLINE = 60.0


@pytest.fixture(scope="module")
def cluster(sides):
    """prefill (kv_producer, FlashAttention layout), decode (kv_consumer, same layout), a
    decode with the FlashInfer layout, and a second prefill that a test kills: started in
    parallel (each imports vLLM), initialized in turn."""
    names = ["prefill", "decode", "decode-flashinfer", "prefill-doomed", "prefill-push", "decode-push"]
    procs = {n: sides.start(n) for n in names}
    extra = {"free_timeout_s": FREE_TIMEOUT_S, "link_timeout_ms": 3000, "retry_attempts": 2,
             "retry_deadline_s": 3.0, "notice_deadline_s": 5.0}
    info = {
        "prefill": init_side(procs["prefill"], role="prefill", engine_id="prefill-0", port=free_port(), extra=extra),
        "decode": init_side(procs["decode"], role="decode", engine_id="decode-0", port=free_port(), extra=extra),
        "decode-flashinfer": init_side(procs["decode-flashinfer"], role="decode", engine_id="decode-1",
                                       port=free_port(), layout="flashinfer", extra=extra),
        "prefill-doomed": init_side(procs["prefill-doomed"], role="prefill", engine_id="prefill-1",
                                    port=free_port(), extra=extra),
    }
    push = dict(extra, mode="push", push_wait_s=6.0)
    for name, role, engine in (("prefill-push", "prefill", "prefill-push-0"), ("decode-push", "decode", "decode-push-0")):
        port = free_port()
        info[name] = dict(init_side(procs[name], role=role, engine_id=engine, port=port, extra=push),
                          port=port, engine_id=engine)
    return procs, info


def test_vllm_loads_the_connector_through_its_factory(cluster):
    _, info = cluster
    assert {i["connector"] for i in info.values()} == {"llm_datadist.integrations.vllm.LLMDataDistConnector"}
    assert info["prefill"]["handshake_hash"] == info["decode"]["handshake_hash"]
    assert info["prefill"]["handshake_hash"] != info["decode-flashinfer"]["handshake_hash"]


def test_decode_pulls_prefill_bytes_async_and_prefill_frees_on_notice(cluster):
    procs, info = cluster
    p, d = procs["prefill"], procs["decode"]
    free_before = info["prefill"]["free_blocks"]
    pre = p.call("prefill", deadline=STEP_DEADLINE, request_id="req-pull", prompt=PROMPT)
    params = pre["kv_transfer_params"]
    assert pre["finish_reason"] == "length"
    assert len(pre["block_ids"]) == 3 and pre["free_blocks"] == free_before - 3    # held for the decode
    assert params["do_remote_prefill"] and params["remote_engine_id"] == "prefill-0"
    assert params["remote_blocks_expiry_time"] > time.time()
    # what the prefill holds is what its model wrote for all 40 prompt tokens
    assert pre["digest"] == p.call("expected_digest", request_id="req-pull", prompt_len=len(PROMPT), writer=1)

    dec = d.call("decode", deadline=STEP_DEADLINE, request_id="req-pull", prompt=PROMPT, kv_transfer_params=params)
    # parked while the load ran in the background, then scheduled with 39 tokens loaded: only the
    # last prompt token and the one generated token were computed on the decode
    assert dec["statuses"] == ["WAITING", "WAITING_FOR_REMOTE_KVS", "RUNNING"], dec["statuses"]
    assert dec["computed"] == [[39, 1], [40, 1]], dec["computed"]
    assert dec["load_errors"] == [] and dec["transfer"]["ok"] and dec["transfer"]["attempts"] == 1
    assert dec["digest_at_load"] == pre["digest"]                   # every byte of the 3 blocks
    assert set(d.call("link_transports").values()) == {"shm"}       # linked from the params' handshake

    freed = p.call("step", deadline=STEP_DEADLINE, until_freed=["req-pull"], deadline_s=30.0)
    assert "req-pull" in freed["freed"] and "req-pull" not in freed["expired"], d.stderr_text()[-2000:]
    assert freed["free_blocks"] == free_before
    assert freed["elapsed_s"] < FREE_TIMEOUT_S                     # the notice, not the expiry


def test_prefill_frees_at_the_expiry_when_no_decode_comes(cluster):
    procs, info = cluster
    p = procs["prefill"]
    pre = p.call("prefill", deadline=STEP_DEADLINE, request_id="req-orphan", prompt=PROMPT[:20])
    expiry = pre["kv_transfer_params"]["remote_blocks_expiry_time"]
    assert pre["free_blocks"] == info["prefill"]["free_blocks"] - 2
    freed = p.call("step", deadline=STEP_DEADLINE, until_freed=["req-orphan"], deadline_s=FREE_TIMEOUT_S + 20)
    assert "req-orphan" in freed["expired"]
    assert time.time() >= expiry
    assert freed["free_blocks"] == info["prefill"]["free_blocks"]


def test_killed_prefill_gives_load_errors_and_decode_recomputes(cluster):
    procs, _ = cluster
    p, d = procs["prefill-doomed"], procs["decode"]
    pre = p.call("prefill", deadline=STEP_DEADLINE, request_id="req-doomed", prompt=PROMPT)
    p.kill()
    dec = d.call("decode", deadline=STEP_DEADLINE, request_id="req-doomed", prompt=PROMPT,
                 kv_transfer_params=pre["kv_transfer_params"])
    assert not dec["transfer"]["ok"], dec["transfer"]
    assert len(set(dec["load_errors"])) >= 3, dec                 # the request's 3 local blocks
    assert dec["statuses"][:2] == ["WAITING", "WAITING_FOR_REMOTE_KVS"], dec["statuses"]
    # vLLM's scheduler recomputed the prompt from token 0, then generated one token
    assert dec["computed"][0] == [0, 40] and dec["computed"][-1] == [40, 1], dec["computed"]


def test_incompatible_peer_refused_naming_both_hashes(cluster):
    procs, info = cluster
    p, d = procs["prefill"], procs["decode-flashinfer"]
    pre = p.call("prefill", deadline=STEP_DEADLINE, request_id="req-mismatch", prompt=PROMPT)
    dec = d.call("decode", deadline=STEP_DEADLINE, request_id="req-mismatch", prompt=PROMPT,
                 kv_transfer_params=pre["kv_transfer_params"])
    err = dec["transfer"]["error"]
    assert not dec["transfer"]["ok"] and err["code"] == "LLM_LINK_FAILED", err
    assert info["prefill"]["handshake_hash"][:16] in err["message"], err["message"]
    assert info["decode-flashinfer"]["handshake_hash"][:16] in err["message"], err["message"]
    assert dec["computed"][0] == [0, 40], dec["computed"]          # recomputed instead
    # nothing was read, so no notice: the prefill frees this request at the expiry
    freed = p.call("step", deadline=STEP_DEADLINE, until_freed=["req-mismatch"], deadline_s=FREE_TIMEOUT_S + 20)
    assert "req-mismatch" in freed["expired"]




def test_push_mode_prefill_writes_each_layer_into_the_decode_blocks(cluster):
    """Push mode: the proxy sends the request to both sides at once; the decode names its
    blocks, the prefill pushes layer by layer as its model writes them, the decode is told when
    all arrived and the prefill frees its blocks on the decode's confirmation."""
    import concurrent.futures
    procs, info = cluster
    p, d = procs["prefill-push"], procs["decode-push"]
    free_before = info["prefill-push"]["free_blocks"]
    common = {"kv_mode": "push", "transfer_id": "xfer-push-1"}
    to_decode = dict(common, do_remote_prefill=True, remote_engine_id=info["prefill-push"]["engine_id"],
                     remote_host="127.0.0.1", remote_port=info["prefill-push"]["port"])
    to_prefill = dict(common, do_remote_decode=True, remote_engine_id=info["decode-push"]["engine_id"])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        dec_f = pool.submit(d.call, "decode", deadline=STEP_DEADLINE, request_id="req-push-d", prompt=PROMPT,
                            kv_transfer_params=to_decode)
        pre_f = pool.submit(p.call, "prefill", deadline=STEP_DEADLINE, request_id="req-push-p", prompt=PROMPT,
                            kv_transfer_params=to_prefill)
        pre, dec = pre_f.result(), dec_f.result()
    assert pre["kv_transfer_params"] is None and len(pre["block_ids"]) == 3
    assert pre["digest"] == p.call("expected_digest", request_id="req-push-p", prompt_len=len(PROMPT), writer=1)
    # parked while the prefill pushed, then only the last prompt token and one more computed here
    assert dec["statuses"] == ["WAITING", "WAITING_FOR_REMOTE_KVS", "RUNNING"], dec["statuses"]
    assert dec["computed"] == [[39, 1], [40, 1]], dec["computed"]
    assert dec["load_errors"] == [] and dec["transfer"]["ok"], dec["transfer"]
    assert dec["digest_at_load"] == pre["digest"]                   # every byte of the 3 blocks
    freed = p.call("step", deadline=STEP_DEADLINE, until_freed=["req-push-p"], deadline_s=30.0)
    assert "req-push-p" in freed["freed"] and "req-push-p" not in freed["expired"], p.stderr_text()[-2000:]
    assert freed["free_blocks"] == free_before


def test_push_mode_without_a_prefill_is_a_load_error_and_recomputed(cluster):
    procs, info = cluster
    d = procs["decode-push"]
    to_decode = {"kv_mode": "push", "transfer_id": "xfer-push-orphan", "do_remote_prefill": True,
                 "remote_engine_id": info["prefill-push"]["engine_id"], "remote_host": "127.0.0.1",
                 "remote_port": info["prefill-push"]["port"]}
    dec = d.call("decode", deadline=STEP_DEADLINE, request_id="req-push-orphan", prompt=PROMPT[:20],
                 kv_transfer_params=to_decode)
    err = dec["transfer"]["error"]
    assert not dec["transfer"]["ok"] and err["code"] == "LLM_KV_CACHE_NOT_EXIST", err   # no ticket came
    assert dec["computed"][0] == [0, 20], dec["computed"]          # recomputed instead


def test_push_mode_prefill_aborted_while_pushing_keeps_its_blocks_until_the_push_ends(cluster):
    """A client aborts the prefill request after its prompt is computed, while its push runs
    (here waiting for a decode that never publishes its landing record): vLLM must not free
    the blocks the push reads until the workers report the push ended."""
    procs, info = cluster
    p = procs["prefill-push"]
    free_before = p.call("step", deadline=STEP_DEADLINE, until_freed=[], deadline_s=0.0)["free_blocks"]
    to_prefill = {"kv_mode": "push", "transfer_id": "xfer-push-aborted", "do_remote_decode": True,
                  "remote_engine_id": info["decode-push"]["engine_id"]}
    pre = p.call("prefill", deadline=STEP_DEADLINE, request_id="req-push-aborted", prompt=PROMPT,
                 kv_transfer_params=to_prefill, max_tokens=4, abort_after_prompt=True)
    assert pre["aborted"] and pre["free_blocks"] == free_before - 3, pre     # held for the push
    freed = p.call("step", deadline=STEP_DEADLINE, until_freed=["req-push-aborted"], deadline_s=30.0)
    assert "req-push-aborted" in freed["freed"], p.stderr_text()[-2000:]
    assert freed["free_blocks"] == free_before


@pytest.mark.cuda
def test_cuda_kv_caches_over_cuda_ipc(sides):
    """The same pull with the KV cache in CUDA memory (registered in place): bytes equal, link
    over cuda_ipc. Needs a CUDA device (benchmarks/gpu_record.sh runs the cuda marker)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    p, d = sides.start("prefill-cuda"), sides.start("decode-cuda")
    init_side(p, role="prefill", engine_id="prefill-cuda", port=free_port(), device="cuda")
    init_side(d, role="decode", engine_id="decode-cuda", port=free_port(), device="cuda")
    pre = p.call("prefill", deadline=STEP_DEADLINE, request_id="req-cuda", prompt=PROMPT)
    dec = d.call("decode", deadline=STEP_DEADLINE, request_id="req-cuda", prompt=PROMPT,
                 kv_transfer_params=pre["kv_transfer_params"])
    assert dec["transfer"]["ok"] and dec["digest_at_load"] == pre["digest"]
    assert set(d.call("link_transports").values()) == {"cuda_ipc"}
