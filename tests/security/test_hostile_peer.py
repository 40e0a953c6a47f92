# SPDX-License-Identifier: Apache-2.0
"""Issue 10, items 1, 2, 4-8: a peer without the secret (or with a forged identity) attacks a
listening prefill over its TCP port. After every attack the prefill is alive and serves a
legitimate decoder byte-exact; no reply carries a byte from outside a registered region.

Each test names the finding it reproduces; on the build before the fix each of them fails (the
prefill dies, leaks, or lets the attacker in)."""
from __future__ import annotations

import os
import re
import socket
import struct
import time
from typing import Tuple

import pytest

import llm_datadist as ld
from raw_peer import (PROTOCOL_VERSION, FrameType, RawPeer, Reader, _mac, frame, parse_pull_reply, parse_status,
                      pull_request, push_complete)
from workers import Worker, WorkerGroup, block_copies, blocks_key, desc, req_key

P, D = 1, 2           # the prefill and the legitimate decode
ATTACKER = 99
PARAM_INVALID = int(ld.LLMStatusCode.LLM_PARAM_INVALID.value)
BLOCKS = desc(2, [8, 4, 64])  # 8 blocks of 512 bytes per tensor, 2 tensors
CONTIG = desc(2, [2, 8, 64])  # 2 slots of 1 KiB per tensor


def _prefill(group: WorkerGroup, **init) -> Tuple[Worker, dict]:
    p = group.spawn("prefill", role="PROMPT", cluster_id=P, listen=True, pool_bytes=16 << 20, device_pool=False,
                    **init)
    blocks = p.allocate(dict(BLOCKS, placement="HOST"), blocks=True, blocks_key=blocks_key(P))
    contig = p.allocate(dict(CONTIG, placement="HOST"), keys=[req_key(P, 7)])
    p.fill(blocks, 11)
    p.fill(contig, 12)
    return p, {"blocks": blocks, "contig": contig}


def _serves_legit_decode(group: WorkerGroup, p: Worker, caches: dict, transport: str = "tcp",
                         decode: Worker = None, **init) -> Worker:
    """A decode links (unless given) and pulls blocks byte-exact: the prefill still works."""
    assert p.alive, p.stderr_text()
    d = decode or group.spawn("decode", role="DECODER", cluster_id=D, transport=transport, pool_bytes=16 << 20,
                              device_pool=False, **init)
    if decode is None:
        d.link_to(p)
    dst = d.allocate(dict(BLOCKS, placement="HOST"), blocks=True)
    d.fill(dst, 5)
    src_blocks, dst_blocks = [1, 6, 3], [0, 2, 7]
    d.ok(d.pull_blocks(blocks_key(P), dst, src_blocks, dst_blocks))
    d.verify(dst, 5, block_copies(caches["blocks"], 11, src_blocks, dst, dst_blocks), what="after the attack")
    return d


def _attacker(p: Worker, client_id: int = ATTACKER, **kw) -> RawPeer:
    return RawPeer.link("127.0.0.1", p.listen_port, client_id=client_id, server_id=P, **kw)


def _linked(w: Worker, cluster_id: int) -> bool:
    """An active link to `cluster_id` exists in worker `w`."""
    return bool(w.call("exec", code=f"result = {cluster_id} in [c for c in dd._check_init().linked_clusters()]"))


# ---- item 1: chunk_count * chunk_bytes --------------------------------------------------------------

@pytest.mark.parametrize("chunk_count,chunk_bytes", [(2**32 - 1, 0), (2**20, 2**44), (2**32 - 1, 1)],
                         ids=["zero_bytes_huge_count", "product_wraps", "count_beyond_cap"])
def test_slot_to_blocks_chunk_overflow_fails_the_request_not_the_prefill(group, chunk_count, chunk_bytes):
    p, caches = _prefill(group)
    with _attacker(p) as peer:
        reply, data = peer.pull(1, pull_request(key_kind=1, cache_id=caches["contig"].cache_id, batch_index=0,
                                                layout=2, delivery=1, tensor_count=2, chunk_bytes=chunk_bytes,
                                                chunk_count=chunk_count))
        assert reply.status == PARAM_INVALID and data == b"", reply
        assert "do not fit" in reply.message or "not a destination" in reply.message, reply.message
    _serves_legit_decode(group, p, caches)


# ---- item 2: tensor_begin / all_tensors ---------------------------------------------------------------

@pytest.mark.parametrize("delivery", [0, 1], ids=["describe", "stream"])
def test_tensor_begin_is_checked_even_for_all_tensors(group, delivery):
    p, caches = _prefill(group)
    with _attacker(p) as peer:
        for begin in (1, 2**20, 2**32 - 1):
            reply, data = peer.pull(begin, pull_request(key_kind=2, layout=1, delivery=delivery, all_tensors=1,
                                                        tensor_begin=begin, tensor_count=2, chunk_bytes=512,
                                                        blocks=[0]))
            assert reply.status == PARAM_INVALID and reply.locations == () and data == b"", (begin, reply)
    _serves_legit_decode(group, p, caches)


def test_all_tensors_must_be_0_or_1(group):
    p, caches = _prefill(group)
    with _attacker(p) as peer:
        peer.send_frame(FrameType.PULL_REQUEST, 1, pull_request(key_kind=2, layout=1, all_tensors=7, tensor_count=2,
                                                                chunk_bytes=512, blocks=[0]))
        assert peer.closed_by_server(5), "a malformed request must end the attacker's link"
    _serves_legit_decode(group, p, caches)


def test_described_pull_is_refused_on_a_tcp_link(group):
    """Where memory lives (pool offsets, raw addresses) is told only to a verified same-host peer."""
    p, caches = _prefill(group)
    with _attacker(p) as peer:
        reply, data = peer.pull(1, pull_request(key_kind=2, layout=1, delivery=0, tensor_count=2, chunk_bytes=512,
                                                blocks=[0]))
        assert reply.status == PARAM_INVALID and reply.locations == (), reply
        assert "same-host" in reply.message, reply.message
        # A streamed pull of the same blocks still works for a tcp peer (no secret configured).
        reply, data = peer.pull(2, pull_request(key_kind=2, layout=1, delivery=1, tensor_count=2, chunk_bytes=512,
                                                blocks=[0]))
        assert reply.status == 0 and len(data) == 2 * 512, reply
    _serves_legit_decode(group, p, caches)


def test_described_push_is_refused_on_a_tcp_link_and_holds_nothing(group):
    """A described push (protocol 6) tells the peer where the destination lives, so a peer with no
    one-sided transport is refused (LLM_FEATURE_NOT_ENABLED: a requester of ours then streams it)
    and nothing is held for it; a completion naming a push never described is answered with an
    error, not trusted."""
    p, caches = _prefill(group)
    contig = caches["contig"]
    with _attacker(p) as peer:
        peer.send_frame(FrameType.PUSH_REQUEST, 1, pull_request(key_kind=1, cache_id=contig.cache_id, layout=0,
                                                                delivery=0, tensor_count=2, size=1024,
                                                                whole_slot=1, push_bytes=2 * 1024))
        header, payload, data = peer.recv_reply()
        reply = parse_pull_reply(payload)
        assert header[2] == FrameType.PUSH_REPLY and header[3] == 1 and data == b"", header
        assert reply.status == int(ld.LLMStatusCode.LLM_FEATURE_NOT_ENABLED.value) and reply.locations == (), reply
        assert "one-sided" in reply.message, reply.message
        assert p.link_info(ATTACKER)["held"] == 0
        peer.send_frame(FrameType.PUSH_COMPLETE, 2, push_complete(1))
        header, payload, _ = peer.recv_reply()
        code, message = parse_status(Reader(payload))
        assert header[2] == FrameType.PUSH_REPLY and header[3] == 2, header
        assert code == int(ld.LLMStatusCode.LLM_TIMEOUT.value) and "holds no described push 1" in message, message
        # a described pull of a tcp peer is refused too, so it holds nothing a completion could take
        reply, _ = peer.pull(3, pull_request(key_kind=1, cache_id=contig.cache_id, layout=0, delivery=0,
                                             tensor_count=2, size=1024, whole_slot=1))
        assert reply.status == PARAM_INVALID, reply
        # a streamed push of the same slot still works for a tcp peer (no secret configured)
        peer.send_frame(FrameType.PUSH_REQUEST, 4, pull_request(key_kind=1, cache_id=contig.cache_id, layout=0,
                                                                delivery=1, tensor_count=2, size=1024,
                                                                whole_slot=1), data=bytes(range(256)) * 8)
        header, payload, _ = peer.recv_reply()
        assert header[3] == 4 and parse_status(Reader(payload)) == (0, ""), payload
    _serves_legit_decode(group, p, caches)


# ---- item 4: access control ------------------------------------------------------------------------------

def test_listening_on_a_non_loopback_address_without_secret_warns_and_can_be_refused(group):
    w = group.spawn("open", role="PROMPT", cluster_id=P, listen=f"0.0.0.0:{_free_any_port()}", pool_bytes=4 << 20,
                    device_pool=False)
    deadline = time.monotonic() + 5
    while "without a link secret" not in w.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "without a link secret" in w.stderr_text(), w.stderr_text()
    strict = group.start("strict").wait_ready()
    with pytest.raises(Exception, match="LLM_PARAM_INVALID|without a link secret"):
        strict.init(role="PROMPT", cluster_id=P, listen=f"0.0.0.0:{_free_any_port()}",
                    pool_bytes=4 << 20, device_pool=False, options={"llmdd.RequireSecret": "1"})
    # With a secret the same listener starts and says nothing.
    ok = group.spawn("ok", role="PROMPT", cluster_id=3, listen=f"0.0.0.0:{_free_any_port()}", pool_bytes=4 << 20,
                     device_pool=False, secret="s" * 43, options={"llmdd.RequireSecret": "1"})
    assert "without a link secret" not in ok.stderr_text()


def _free_any_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a worker as another uid")
def test_a_process_of_another_uid_gets_no_shared_memory(group):
    """SO_PEERCRED on the pool channel: a decode running as `nobody` links, but over tcp: it maps
    none of the prefill's pools (and the prefill maps none of its)."""
    p, caches = _prefill(group)
    d = Worker("decode-nobody", user=65534)
    group.workers.append(d)
    d.start().wait_ready()
    d.init(role="DECODER", cluster_id=D, pool_bytes=16 << 20, device_pool=False)
    d.link_to(p)
    info = d.link_info(P)
    assert info["transport"] == "tcp" and "uid" in info["reason"], info
    assert p.link_info(D)["transport"] == "tcp", p.link_info(D)
    _serves_legit_decode(group, p, caches, decode=d)
    # Allowed explicitly: shm again.
    p2 = group.spawn("prefill2", role="PROMPT", cluster_id=3, listen=True, pool_bytes=4 << 20, device_pool=False,
                     options={"llmdd.AllowedUids": "65534"})
    d2 = Worker("decode-nobody-2", user=65534)
    group.workers.append(d2)
    d2.start().wait_ready()
    d2.init(role="DECODER", cluster_id=4, pool_bytes=4 << 20, device_pool=False,
            options={"llmdd.AllowedUids": str(os.geteuid())})
    d2.link_to(p2)
    assert d2.link_info(3)["transport"] == "shm", d2.link_info(3)


# ---- item 5: link takeover ------------------------------------------------------------------------------

def test_a_live_link_is_not_displaced_by_a_peer_naming_its_cluster_id(group):
    p, caches = _prefill(group)
    d = _serves_legit_decode(group, p, caches)
    with pytest.raises(AssertionError, match="already has a live link"):
        _attacker(p, client_id=D)
    _serves_legit_decode(group, p, caches, decode=d)  # the decoder's link still works
    # A decode that died may be replaced by its restart with the same cluster id.
    d.close()
    deadline = time.monotonic() + 5
    while _linked(p, D) and time.monotonic() < deadline:
        time.sleep(0.05)
    _serves_legit_decode(group, p, caches)


# ---- items 6 and 8: the client proves the secret first; nothing before authentication --------------------

def test_nothing_before_the_client_proves_the_secret(group):
    secret = "correct horse battery staple"
    p, caches = _prefill(group, secret=secret)
    with RawPeer.connect("127.0.0.1", p.listen_port) as peer:
        nonce_c = os.urandom(16)
        hello = struct.pack("<QQ", ATTACKER, P) + nonce_c + struct.pack("<B", 1)
        if PROTOCOL_VERSION == 2:  # the build before the fix: boot id, pid, timeout follow
            hello += struct.pack("<I", 0) + struct.pack("<ii", 1, 5000)
        peer.send_frame(FrameType.HELLO, 0, hello)
        header, payload = peer.recv_frame()
        assert header[2] == FrameType.HELLO_REPLY, header
        # No MAC over our nonce to test guesses against offline ...
        r = Reader(payload)
        r.u("I"), r.string()
        r.u("Q")
        nonce_s = r.take(16)
        for guess in ("password", secret):
            assert _mac(guess, b"llmdd-server", nonce_c, nonce_s, P, ATTACKER) not in payload
        # ... and nothing about the process: no boot id, no pid, no pool sizes, no socket name.
        with open("/proc/sys/kernel/random/boot_id") as f:
            assert f.read().strip().encode() not in payload
        assert b"llmdd-" not in payload
        assert len(payload) <= 4 + 4 + 8 + 16 + 1, payload
        # A wrong proof is refused without the server's proof.
        peer.send_frame(FrameType.AUTH, 0, bytes(32) + struct.pack("<I", 0) + struct.pack("<iI", 1, 0))
        header, payload = peer.recv_frame()
        assert b"differs" in payload and len(payload) < 128, payload
    with pytest.raises(AssertionError, match="refused"):
        _attacker(p, secret="wrong")
    with _attacker(p, secret=secret):
        pass
    _serves_legit_decode(group, p, caches, secret=secret)


# ---- item 7: bounded handshakes -------------------------------------------------------------------------------

def _threads_and_rss(pid: int) -> Tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    return int(re.search(r"Threads:\s+(\d+)", text).group(1)), int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


def _connect_from(source: str, port: int) -> socket.socket:
    s = socket.socket()
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_idle_connections_are_bounded_and_a_legit_link_still_succeeds(group):
    p, caches = _prefill(group)
    threads0, _ = _threads_and_rss(p.pid)
    socks = []
    try:
        for i in range(300):  # from 127.0.0.2 .. 127.0.0.4: three flooding hosts
            socks.append(_connect_from(f"127.0.0.{2 + i % 3}", p.listen_port))
        time.sleep(0.5)
        threads, _ = _threads_and_rss(p.pid)
        per_address = ld._core.LINK_LIMITS["max_handshakes_per_address"]
        assert threads - threads0 <= 3 * per_address + 4, f"{threads - threads0} threads for 300 idle connections"
        t0 = time.monotonic()
        _serves_legit_decode(group, p, caches)
        assert time.monotonic() - t0 < 20
    finally:
        for s in socks:
            s.close()


def test_a_silent_connection_is_closed_by_the_servers_own_deadline(group):
    p, caches = _prefill(group)
    with _connect_from("127.0.0.2", p.listen_port) as s:
        t0 = time.monotonic()
        s.settimeout(8)
        assert s.recv(1) == b""
        assert time.monotonic() - t0 < ld._core.LINK_LIMITS["server_hello_timeout_ms"] / 1000 + 3


def test_a_huge_announced_payload_before_authentication_allocates_nothing(group):
    p, caches = _prefill(group)
    _, rss0 = _threads_and_rss(p.pid)
    socks = []
    try:
        for i in range(24):
            s = _connect_from(f"127.0.0.{10 + i}", p.listen_port)
            s.sendall(frame(FrameType.HELLO, 0, b"", payload_bytes=64 << 20) + b"x" * 1000)
            socks.append(s)
        time.sleep(0.5)
        _, rss = _threads_and_rss(p.pid)
        assert rss - rss0 < 64 << 10, f"RSS grew by {(rss - rss0) >> 10} MiB"  # kB: less than 64 MiB in all
        for s in socks:
            s.settimeout(5)
            try:
                assert s.recv(1) == b"", "the oversized hello must end the connection"
            except ConnectionResetError:
                pass  # closed with our bytes unread: a reset, also an end
    finally:
        for s in socks:
            s.close()
    _serves_legit_decode(group, p, caches)


# ---- item 8: owner-side liveness ------------------------------------------------------------------------------

def test_a_silent_peer_is_dropped_and_its_pins_released(group):
    p, caches = _prefill(group)
    peer = _attacker(p)
    try:
        # A streamed pull that would consume the req key, never released (the peer goes silent).
        reply, data = peer.pull(1, pull_request(key_kind=0, req_id=7, layout=0, delivery=1, tensor_count=2,
                                                size=CONTIG["shape"][1] * CONTIG["shape"][2] * 2, whole_slot=1))
        assert reply.status == 0 and reply.needs_release, reply
        t0 = time.monotonic()
        while _linked(p, ATTACKER) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        dropped = time.monotonic() - t0
        assert not _linked(p, ATTACKER), "a silent peer's link must be dropped"
        assert dropped < ld._core.LINK_LIMITS["peer_dead_ms"] / 1000 + 3, f"dropped after {dropped:.1f} s"
    finally:
        peer.close()
    # The key was not consumed (no release came), and a legitimate decode still gets it.
    d = _serves_legit_decode(group, p, caches)
    dst = d.allocate(dict(CONTIG, placement="HOST"))
    d.ok(d.pull_cache(req_key(P, 7), dst, batch_index=0))


# ---- item 8: finalize and bad_alloc -----------------------------------------------------------------------------

def test_calls_after_finalize_raise_llm_exception_with_a_code():
    from config_helpers import make_config  # tests/ (on the path through its conftest.py)
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    dd.init(make_config().generate_options())
    cm = dd.cache_manager
    cache_desc = ld.CacheDesc(2, [4, 16], ld.DataType.DT_FLOAT16, ld.Placement.HOST)
    cache = cm.allocate_cache(cache_desc)
    dd.finalize()
    for call in (lambda: cm.allocate_cache(cache_desc), lambda: cm.deallocate_cache(cache),
                 lambda: dd.link_clusters([ld.LLMClusterInfo()], 1000), lambda: dd.switch_role(ld.LLMRole.DECODER)):
        with pytest.raises(ld.LLMException) as info:
            call()
        assert info.value.status_code == ld.LLMStatusCode.LLM_ENGINE_FINALIZED, info.value
        assert isinstance(info.value, RuntimeError)  # what upstream raises, still catchable as such


def test_native_bad_alloc_is_llm_out_of_memory():
    with pytest.raises(ld.LLMException) as info:
        ld._core.throw_bad_alloc_for_test()
    assert info.value.status_code == ld.LLMStatusCode.LLM_OUT_OF_MEMORY
