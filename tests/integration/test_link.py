# SPDX-License-Identifier: Apache-2.0
"""link_clusters / unlink_clusters / switch_role / finalize between real processes: every code
of docs/transfer.md ("Links"), the secret, the transports and LLMDataDist.link_info()."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from workers import (DECODE_ID, LOOPBACK, PREFILL_ID, FakePeer, RecordingProxy, cluster, cluster_of, desc,
                     free_port, has_link, prefix_key, slot_copies, start_pair, wait_link_state)

pytestmark = pytest.mark.timeout(60)

SUCCESS = "LLM_SUCCESS"
LINK_FAILED = "LLM_LINK_FAILED"
ALREADY_LINK = "LLM_ALREADY_LINK"
PARAM_INVALID = "LLM_PARAM_INVALID"
NOT_YET_LINK = "LLM_NOT_YET_LINK"
UNLINK_FAILED = "LLM_UNLINK_FAILED"


def small_pull_roundtrip(prefill, decode, seed=5):
    """A prefix-key pull from prefill to decode, every byte checked: proves a link works."""
    src = prefill.allocate(desc(2, [2, 8, 16]), keys=[prefix_key(prefill.cluster_id, 900 + seed)])
    prefill.fill(src, seed)
    dst = decode.allocate(desc(2, [2, 8, 16]))
    decode.fill(dst, seed + 1000)
    decode.ok(decode.pull_cache(prefix_key(prefill.cluster_id, 900 + seed), dst, batch_index=1))
    decode.verify(dst, seed + 1000, slot_copies(src, seed, 0, dst, 1), "after pull")
    return src, dst


# ---- success, ALREADY_LINK, NOT_YET_LINK ---------------------------------------------------------

def test_link_unlink_relink(prefill, decode, transport):
    ret = decode.link([cluster_of(prefill)])
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], ret
    info = decode.link_info(PREFILL_ID)
    assert info["state"] == "active" and info["transport"] == transport, info
    # On one host with shared pools the frames leave loopback TCP for the Unix pool channel,
    # on both ends; the listen address stays what the user linked to.
    expected_channel = "unix" if transport == "shm" else "tcp"
    assert info["channel"] == expected_channel and info["remote_address"].endswith(f":{prefill.listen_port}"), info
    wait_link_state(prefill, DECODE_ID, "active")
    assert prefill.link_info(DECODE_ID)["channel"] == expected_channel
    small_pull_roundtrip(prefill, decode)
    ret = decode.unlink([cluster_of(prefill)])
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], ret
    assert not has_link(decode, PREFILL_ID)
    wait_link_state(prefill, DECODE_ID, None)  # non-force unlink tears down both ends
    ret = decode.unlink([cluster_of(prefill)])  # already gone: success, as upstream
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], ret
    ret = decode.link([cluster_of(prefill)])
    assert ret["per_cluster"] == [SUCCESS], ret
    small_pull_roundtrip(prefill, decode, seed=6)


def test_upstream_call_pattern_with_local_ip_info(prefill, decode):
    """upstream_api.md section 7: local=(own ip, 0), remote=(peer listen ip, port), timeout 5000."""
    info = cluster(PREFILL_ID, prefill.listen_port, local=[(LOOPBACK, 0)])
    ret = decode.link([info], timeout=5000)
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], ret
    small_pull_roundtrip(prefill, decode)
    ret = decode.unlink([info], timeout=5000)
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], ret


def test_already_link_keeps_the_link_working(linked_pair):
    p, d = linked_pair.prefill, linked_pair.decode
    ret = d.link([cluster_of(p)])
    assert ret["overall"] == ALREADY_LINK and ret["per_cluster"] == [ALREADY_LINK], ret
    assert d.link_info(PREFILL_ID)["state"] == "active"
    small_pull_roundtrip(p, d)


def test_links_are_symmetric(linked_pair):
    """Once decode linked to prefill, prefill pulls from decode over the same link."""
    p, d = linked_pair.prefill, linked_pair.decode
    assert p.link_info(DECODE_ID)["state"] == "active"
    small_pull_roundtrip(d, p, seed=8)
    small_pull_roundtrip(p, d, seed=9)


def test_unlink_unknown_cluster_succeeds(spawn):
    """Upstream: link_mgr/comm_entity_manager.cc DestroyEntity (a missing entity is success)."""
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    ret = d.unlink([cluster(77, free_port())])
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], ret
    ret = d.unlink([cluster(77, free_port())], force=True)
    assert ret["per_cluster"] == [SUCCESS], ret


# ---- LINK_FAILED ---------------------------------------------------------------------------------

def test_refused_port_fails_fast(spawn):
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    ret = d.link([cluster(PREFILL_ID, free_port())], timeout=3000)
    assert ret["overall"] == LINK_FAILED and ret["per_cluster"] == [LINK_FAILED], ret
    print(f"refused link failed in {ret['elapsed_s'] * 1e3:.1f} ms")
    assert ret["elapsed_s"] < 2.0, "a refused connection must not wait for the timeout"
    assert not has_link(d, PREFILL_ID)


def test_unreachable_peer_fails_within_timeout(spawn):
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    ret = d.link([cluster(PREFILL_ID, 9, ip="192.0.2.1")], timeout=500)  # TEST-NET-1: never answers
    assert ret["per_cluster"] == [LINK_FAILED], ret
    print(f"unreachable link failed in {ret['elapsed_s'] * 1e3:.1f} ms")
    assert ret["elapsed_s"] < 3.0


def test_wrong_remote_cluster_id(prefill, decode):
    ret = decode.link([cluster(99, prefill.listen_port)])
    assert ret["overall"] == LINK_FAILED and ret["per_cluster"] == [LINK_FAILED], ret
    assert not has_link(decode, 99) and not has_link(decode, PREFILL_ID)
    # the failed attempt left nothing behind on either side
    ret = decode.link([cluster_of(prefill)])
    assert ret["per_cluster"] == [SUCCESS], ret


def test_listener_that_never_answers_times_out(spawn):
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    with FakePeer("mute") as mute:
        ret = d.link([cluster(PREFILL_ID, mute.port)], timeout=500)
        assert ret["per_cluster"] == [LINK_FAILED], ret
        print(f"mute listener: link failed after {ret['elapsed_s'] * 1e3:.1f} ms (timeout 500 ms)")
        assert 0.45 <= ret["elapsed_s"] < 3.0
        assert mute.accepted >= 1
    assert not has_link(d, PREFILL_ID)


def test_garbage_speaking_peer_is_refused_before_the_timeout(spawn):
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    with FakePeer("garbage") as bad:
        ret = d.link([cluster(PREFILL_ID, bad.port)], timeout=5000)
        assert ret["per_cluster"] == [LINK_FAILED], ret
        print(f"garbage peer: link failed after {ret['elapsed_s'] * 1e3:.1f} ms")
        assert ret["elapsed_s"] < 2.5, "an incompatible answer must fail the link at once"
    # and the decode still links to a real peer afterwards
    p = spawn("prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True)
    assert d.link([cluster_of(p)])["per_cluster"] == [SUCCESS]


def test_garbage_client_does_not_hurt_the_listener(prefill, decode):
    """A client that connects to the listener and sends junk is dropped; real links still work."""
    import socket
    for payload in (b"", b"\x00" * 7, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 64):
        with socket.create_connection((LOOPBACK, prefill.listen_port), timeout=2) as s:
            if payload:
                s.sendall(payload)
    ret = decode.link([cluster_of(prefill)])
    assert ret["per_cluster"] == [SUCCESS], ret
    small_pull_roundtrip(prefill, decode)


# ---- shared secret ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prefill_secret,decode_secret,expect", [
    ("s3cret-A", "s3cret-A", SUCCESS),
    ("s3cret-A", "s3cret-B", LINK_FAILED),
    ("s3cret-A", None, LINK_FAILED),
    (None, "s3cret-A", LINK_FAILED),
])
@pytest.mark.parametrize("how", ["env", "option"])
def test_link_secret(group, prefill_secret, decode_secret, expect, how):
    def secret_args(secret):
        if secret is None:
            return {}, {}
        if how == "env":
            return {"LLMDD_LINK_SECRET": secret}, {}
        return {}, {"secret": secret}
    p_env, p_init = secret_args(prefill_secret)
    d_env, d_init = secret_args(decode_secret)
    log = {"LLMDD_LOG_LEVEL": "info"}
    p = group.spawn("prefill", env={**p_env, **log}, role="PROMPT", cluster_id=PREFILL_ID, listen=True, **p_init)
    d = group.spawn("decode", env={**d_env, **log}, role="DECODER", cluster_id=DECODE_ID, **d_init)
    ret = d.link([cluster_of(p)], timeout=3000)
    assert ret["per_cluster"] == [expect], ret
    if expect == SUCCESS:
        small_pull_roundtrip(p, d)
        return
    assert ret["elapsed_s"] < 2.5, "a secret mismatch is known at the handshake, not at the timeout"
    assert not has_link(d, PREFILL_ID) and not has_link(p, DECODE_ID)
    if (prefill_secret is None) != (decode_secret is None):
        logs = d.stderr_text() + p.stderr_text()
        assert re.search("secret", logs, re.I), "one side without a secret: the logs must say so"


def generated_secret():
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "secret"], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


def test_link_with_generated_secrets(group):
    """`llm-datadist secret` output works as the secret: the same one links, another one does not."""
    shared, other = generated_secret(), generated_secret()
    p = group.spawn("prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True, secret=shared)
    d = group.spawn("decode", role="DECODER", cluster_id=DECODE_ID, secret=shared)
    stranger = group.spawn("stranger", role="DECODER", cluster_id=DECODE_ID + 1, secret=other)
    assert d.link([cluster_of(p)])["per_cluster"] == [SUCCESS]
    small_pull_roundtrip(p, d)
    assert stranger.link([cluster_of(p)], timeout=3000)["per_cluster"] == [LINK_FAILED]
    assert not has_link(stranger, PREFILL_ID)


def test_secret_never_crosses_the_wire(group):
    secret = "Wire-Secret-9f8e7d6c5b4a"
    p = group.spawn("prefill", env={"LLMDD_LINK_SECRET": secret}, role="PROMPT", cluster_id=PREFILL_ID, listen=True)
    d = group.spawn("decode", role="DECODER", cluster_id=DECODE_ID, secret=secret)
    with RecordingProxy(p.listen_port) as proxy:
        ret = d.link([cluster(PREFILL_ID, proxy.port)])
        assert ret["per_cluster"] == [SUCCESS], ret
        small_pull_roundtrip(p, d)
        d.unlink([cluster(PREFILL_ID, proxy.port)])
        seen = bytes(proxy.upstream) + bytes(proxy.downstream)
    assert proxy.connections >= 1 and len(seen) > 0, "the handshake did not go through the proxy"
    for form in (secret.encode(), secret.encode().hex().encode(), secret.encode().hex().upper().encode(),
                 secret.encode("utf-16-le")):
        assert form not in seen, f"the secret crossed the wire as {form[:12]!r}..."


# ---- PARAM_INVALID (returned per cluster) and raised errors ------------------------------------------

def test_bad_ip_infos_are_param_invalid_per_cluster(prefill, decode):
    no_remote = cluster(PREFILL_ID, remote=[])
    two_remote = cluster(PREFILL_ID, remote=[(LOOPBACK, prefill.listen_port), (LOOPBACK, prefill.listen_port)])
    ip_zero = cluster(PREFILL_ID, prefill.listen_port, ip="0.0.0.0")
    port_zero = cluster(PREFILL_ID, 0)
    for bad in (no_remote, two_remote, ip_zero, port_zero):
        ret = decode.link([bad])
        assert ret["overall"] == PARAM_INVALID and ret["per_cluster"] == [PARAM_INVALID], (bad, ret)
    assert not has_link(decode, PREFILL_ID)
    # mixed: per-cluster codes in order, overall = the last failing cluster's code
    refused = cluster(50, free_port())
    ret = decode.link([cluster(51, remote=[]), refused])
    assert ret["per_cluster"] == [PARAM_INVALID, LINK_FAILED] and ret["overall"] == LINK_FAILED, ret
    ret = decode.link([cluster(50, free_port()), cluster(51, remote=[])])
    assert ret["per_cluster"] == [LINK_FAILED, PARAM_INVALID] and ret["overall"] == PARAM_INVALID, ret
    ret = decode.link([cluster_of(prefill), cluster(51, remote=[])])
    assert ret["per_cluster"] == [SUCCESS, PARAM_INVALID] and ret["overall"] == PARAM_INVALID, ret
    assert decode.link_info(PREFILL_ID)["state"] == "active"


def test_link_empty_list_and_bad_timeout(prefill, decode):
    """Upstream (v2/llm_datadist.py, llm_link_manager.cc): an empty list returns
    (LLM_PARAM_INVALID, []); a bad timeout raises."""
    ret = decode.link([])
    assert ret["overall"] == PARAM_INVALID and ret["per_cluster"] == [], ret
    for timeout in (0, -1):
        decode.expect_error(PARAM_INVALID, "link", clusters=[cluster_of(prefill)], timeout=timeout)
    decode.expect_error("ValueError", "link", clusters=[cluster_of(prefill)], timeout=2**31)
    assert not has_link(decode, PREFILL_ID)


def test_unlink_raises_like_link(linked_pair):
    """Upstream (v2/llm_datadist.py unlink_clusters): the same checks as link_clusters."""
    p, d = linked_pair.prefill, linked_pair.decode
    ret = d.unlink([])
    assert ret["overall"] == PARAM_INVALID and ret["per_cluster"] == [], ret
    d.expect_error(PARAM_INVALID, "unlink", clusters=[cluster_of(p)], timeout=0)
    ret = d.unlink([cluster(100 + i, free_port()) for i in range(17)])  # none of them linked
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS] * 17, ret
    assert d.link_info(PREFILL_ID)["state"] == "active"


def test_more_than_16_clusters_in_one_call(prefill, decode):
    """Upstream (llm_link_manager.cc): no limit per call; each cluster gets its code, in order."""
    many = [cluster(100 + i, free_port()) for i in range(8)] + [cluster_of(prefill)] + \
        [cluster(200 + i, free_port()) for i in range(12)]
    ret = decode.link(many)
    assert ret["per_cluster"] == [LINK_FAILED] * 8 + [SUCCESS] + [LINK_FAILED] * 12, ret
    assert ret["overall"] == LINK_FAILED, ret
    assert decode.link_info(PREFILL_ID)["state"] == "active"


# ---- PROCESSING_LINK --------------------------------------------------------------------------------

def test_concurrent_link_of_same_cluster_is_processing_link(spawn):
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    with FakePeer("mute") as mute:
        target = cluster(PREFILL_ID, mute.port)
        first, second = d.parallel([
            {"op": "link", "clusters": [target], "timeout": 2000},
            {"op": "link", "clusters": [target], "timeout": 300, "delay_s": 0.3},
        ])
    assert first.ok and second.ok, (first, second)
    assert first.result["per_cluster"] == [LINK_FAILED], first.result
    assert second.result["per_cluster"] == ["LLM_PROCESSING_LINK"], second.result
    print(f"PROCESSING_LINK after {second.elapsed_s * 1e3:.0f} ms (its timeout 300 ms)")
    assert 0.25 <= second.elapsed_s < 1.5, "the second call waits its own timeout, not the first link's"


# ---- UNLINK_FAILED, force ------------------------------------------------------------------------------

def test_unlink_of_frozen_peer_fails_but_tears_down_locally(linked_pair):
    p, d = linked_pair.prefill, linked_pair.decode
    p.freeze()
    try:
        ret = d.unlink([cluster_of(p)], timeout=300)
        assert ret["overall"] == UNLINK_FAILED and ret["per_cluster"] == [UNLINK_FAILED], ret
        print(f"UNLINK_FAILED after {ret['elapsed_s'] * 1e3:.0f} ms (timeout 300 ms)")
        assert ret["elapsed_s"] < 3.0
        assert not has_link(d, PREFILL_ID), "the local end is torn down anyway"
        d.expect_error(NOT_YET_LINK, "pull_cache", key=prefix_key(PREFILL_ID, 1), cache=_any_cache(d))
    finally:
        p.thaw()
    wait_link_state(p, DECODE_ID, None)  # the thawed prefill sees the closed connection
    assert d.link([cluster_of(p)])["per_cluster"] == [SUCCESS]
    small_pull_roundtrip(p, d)


def _any_cache(worker):
    return worker.allocate(desc(2, [2, 8, 16])).cache_id


def test_force_unlink_is_local_and_peer_follows(linked_pair):
    p, d = linked_pair.prefill, linked_pair.decode
    ret = d.unlink([cluster(PREFILL_ID, free_port())], force=True)  # force: the ip info is not used
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], ret
    assert not has_link(d, PREFILL_ID)
    took = wait_link_state(p, DECODE_ID, None)
    print(f"prefill tore down its end {took * 1e3:.0f} ms after the force unlink")
    assert d.link([cluster_of(p)])["per_cluster"] == [SUCCESS]
    small_pull_roundtrip(p, d)


def test_force_unlink_of_frozen_peer_does_not_wait(linked_pair):
    p, d = linked_pair.prefill, linked_pair.decode
    p.freeze()
    try:
        ret = d.unlink([cluster_of(p)], timeout=3000, force=True)
        assert ret["per_cluster"] == [SUCCESS], ret
        assert ret["elapsed_s"] < 1.0, f"force unlink waited {ret['elapsed_s']:.2f} s for a frozen peer"
        assert not has_link(d, PREFILL_ID)
    finally:
        p.thaw()


# ---- switch_role and finalize -------------------------------------------------------------------------

def test_switch_role_refused_while_linked(linked_pair):
    p, d = linked_pair.prefill, linked_pair.decode
    d.expect_error("LLM_EXIST_LINK", "switch_role", role="PROMPT")
    p.expect_error("LLM_EXIST_LINK", "switch_role", role="DECODER", options={"llm.listenIpInfo": p.listen})
    assert d.link_info(PREFILL_ID)["state"] == "active"  # the refused switch changed nothing
    small_pull_roundtrip(p, d)
    assert d.unlink([cluster_of(p)])["per_cluster"] == [SUCCESS]
    wait_link_state(p, DECODE_ID, None)
    d.call("switch_role", role="PROMPT")
    p.call("switch_role", role="PROMPT", options={"llm.listenIpInfo": p.listen})


def test_switch_role_starts_moves_and_stops_the_listener(spawn):
    a = spawn("a", role="DECODER", cluster_id=10)
    client = spawn("client", role="DECODER", cluster_id=11)
    port1, port2 = free_port(), free_port()
    a.call("switch_role", role="PROMPT", options={"llm.listenIpInfo": f"{LOOPBACK}:{port1}"})
    assert client.link([cluster(10, port1)])["per_cluster"] == [SUCCESS]
    assert client.unlink([cluster(10, port1)])["per_cluster"] == [SUCCESS]
    wait_link_state(a, 11, None)
    a.call("switch_role", role="PROMPT", options={"llm.listenIpInfo": f"{LOOPBACK}:{port2}"})  # move
    assert client.link([cluster(10, port1)], timeout=1000)["per_cluster"] == [LINK_FAILED]
    assert client.link([cluster(10, port2)])["per_cluster"] == [SUCCESS]
    assert client.unlink([cluster(10, port2)])["per_cluster"] == [SUCCESS]
    wait_link_state(a, 11, None)
    a.call("switch_role", role="DECODER")  # no listenIpInfo: the listener stops
    assert client.link([cluster(10, port2)], timeout=1000)["per_cluster"] == [LINK_FAILED]


def test_finalize_unlinks_everything(group, transport):
    pair = start_pair(group, transport)
    p, d = pair.prefill, pair.decode
    d.call("finalize")
    took = wait_link_state(p, DECODE_ID, None)
    print(f"prefill saw the decode's finalize after {took * 1e3:.0f} ms")
    # the same process initializes again and links again
    d.init(role="DECODER", cluster_id=DECODE_ID, transport=transport)
    assert d.link([cluster_of(p)])["per_cluster"] == [SUCCESS]
    small_pull_roundtrip(p, d)
    # and the prefill's finalize takes the link away from the decode
    p.call("finalize")
    took = wait_link_state(d, PREFILL_ID, None)
    print(f"decode saw the prefill's finalize after {took * 1e3:.0f} ms")


def test_listen_port_zero_is_refused(group):
    w = group.start("listener").wait_ready()
    w.expect_error(PARAM_INVALID, "init", role="PROMPT", cluster_id=PREFILL_ID, listen=f"{LOOPBACK}:0")


# ---- parallel links --------------------------------------------------------------------------------

def test_clusters_link_in_parallel(spawn):
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    peers = [FakePeer("mute") for _ in range(4)]
    try:
        ret = d.link([cluster(20 + i, peer.port) for i, peer in enumerate(peers)], timeout=1000)
    finally:
        for peer in peers:
            peer.close()
    assert ret["per_cluster"] == [LINK_FAILED] * 4, ret
    print(f"4 clusters timing out at 1000 ms each, one call: {ret['elapsed_s']:.2f} s")
    assert 0.9 <= ret["elapsed_s"] < 2.5, "4 clusters in one call must be linked in parallel (serial: >= 4 s)"


def test_four_prefills_linked_in_one_call(group, transport):
    specs = [(f"prefill{i}", dict(role="PROMPT", cluster_id=30 + i, listen=True, transport=transport))
             for i in range(4)]
    specs.append(("decode", dict(role="DECODER", cluster_id=DECODE_ID, transport=transport)))
    *prefills, d = group.spawn_many(specs)
    single = d.link([cluster_of(prefills[0])])
    assert single["per_cluster"] == [SUCCESS]
    assert d.unlink([cluster_of(prefills[0])])["per_cluster"] == [SUCCESS]
    wait_link_state(prefills[0], DECODE_ID, None)
    ret = d.link([cluster_of(p) for p in prefills])
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS] * 4, ret
    print(f"one link: {single['elapsed_s'] * 1e3:.1f} ms; four in one call: {ret['elapsed_s'] * 1e3:.1f} ms")
    assert ret["elapsed_s"] < max(4 * single["elapsed_s"], 0.5) + 1.0
    for p in prefills:
        assert d.link_info(p.cluster_id)["peer_pid"] == p.pid
        small_pull_roundtrip(p, d, seed=p.cluster_id)


# ---- link_info ---------------------------------------------------------------------------------------

LINK_INFO_FIELDS = {"transport", "reason", "state", "broken_reason", "bytes_pulled", "pulls", "errors",
                    "peer_pid", "remote_address"}


def test_link_info_fields_and_counters(linked_pair):
    p, d = linked_pair.prefill, linked_pair.decode
    info = d.link_info(PREFILL_ID)
    assert LINK_INFO_FIELDS <= set(info), f"missing {LINK_INFO_FIELDS - set(info)}"
    assert info["transport"] == linked_pair.transport
    assert isinstance(info["reason"], str) and info["reason"], info
    assert info["state"] == "active" and not info["broken_reason"], info
    assert info["peer_pid"] == p.pid
    assert str(p.listen_port) in str(info["remote_address"]), info
    assert p.link_info(DECODE_ID)["peer_pid"] == d.pid
    base_pulls, base_bytes, base_errors = info["pulls"], info["bytes_pulled"], info["errors"]
    src, dst = small_pull_roundtrip(p, d)
    moved = src.num_tensors * src.slot_bytes
    after = d.link_info(PREFILL_ID)
    assert after["pulls"] == base_pulls + 1, after
    assert after["bytes_pulled"] == base_bytes + moved, (after, moved)
    d.expect_error("LLM_KV_CACHE_NOT_EXIST", "pull_cache", key=prefix_key(PREFILL_ID, 31337), cache=dst.cache_id)
    after_err = d.link_info(PREFILL_ID)
    assert after_err["errors"] >= base_errors + 1 and after_err["bytes_pulled"] == after["bytes_pulled"], after_err


def test_link_info_unknown_cluster(spawn):
    d = spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    d.expect_error(NOT_YET_LINK, "link_info", cluster_id=1234)


@pytest.mark.parametrize("side", ["decode", "both"])
def test_transport_forced_by_env(group, side):
    env = {"LLMDD_TRANSPORT": "tcp"}
    p = group.spawn("prefill", env=env if side == "both" else None, role="PROMPT", cluster_id=PREFILL_ID, listen=True)
    d = group.spawn("decode", env=env, role="DECODER", cluster_id=DECODE_ID)
    d.link_to(p)
    info = d.link_info(PREFILL_ID)
    assert info["transport"] == "tcp", info
    assert re.search(r"LLMDD_TRANSPORT|llmdd\.Transport|forc", info["reason"]), info
    small_pull_roundtrip(p, d)


def test_default_same_host_transport_is_shm(group):
    p = group.spawn("prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True)
    d = group.spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    d.link_to(p)
    info = d.link_info(PREFILL_ID)
    assert info["transport"] == "shm", info
    assert p.link_info(DECODE_ID)["transport"] == "shm"
