# SPDX-License-Identifier: Apache-2.0
"""The handshake refuses an incompatible protocol version with a message naming both versions
(in both directions), and an unlink that cannot notify the peer reports LLM_UNLINK_FAILED."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import llm_datadist as ld
from config_helpers import make_config
from llm_datadist import LLMStatusCode, _core

HEADER = struct.Struct("<IHHQQQ")  # magic, version, type, request id, payload bytes, data bytes
MAGIC = 0x4C4C4444
HELLO, HELLO_REPLY = 1, 2
OUR_VERSION = _core.LINK_PROTOCOL_VERSION


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def decode():
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, 2)
    dd.init(make_config().generate_options())
    yield dd
    dd.finalize()


def cluster(port, cluster_id=1):
    info = ld.LLMClusterInfo()
    info.remote_cluster_id = cluster_id
    info.append_remote_ip_info("127.0.0.1", port)
    return info


@pytest.mark.timeout(30)
def test_peer_with_another_protocol_version_is_refused_with_both_versions(decode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def fake_peer():  # answers the hello with a frame of protocol version 99
        conn, _ = server.accept()
        magic, version, kind, rid, payload, data = HEADER.unpack(recv_exact(conn, HEADER.size))
        assert (magic, version, kind) == (MAGIC, OUR_VERSION, HELLO)
        recv_exact(conn, payload)
        conn.sendall(HEADER.pack(MAGIC, 99, HELLO_REPLY, 0, 0, 0))
        time.sleep(0.5)
        conn.close()

    thread = threading.Thread(target=fake_peer)
    thread.start()
    overall, codes = decode.link_clusters([cluster(port)], 3000)
    thread.join(5)
    server.close()
    assert overall == LLMStatusCode.LLM_LINK_FAILED and codes == [LLMStatusCode.LLM_LINK_FAILED]
    message = decode.last_link_errors[1][1]
    assert "peer speaks version 99" in message and f"this process speaks version {OUR_VERSION}" in message


@pytest.mark.timeout(30)
def test_listener_answers_an_old_client_with_both_versions():
    port = free_port()
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    cfg = make_config()
    cfg.listen_ip_info = f"127.0.0.1:{port}"
    dd.init(cfg.generate_options())
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(HEADER.pack(MAGIC, 7, HELLO, 0, 0, 0))
        magic, version, kind, rid, payload, data = HEADER.unpack(recv_exact(client, HEADER.size))
        body = recv_exact(client, payload)
        status, length = struct.unpack_from("<II", body)
        message = body[8:8 + length].decode()
        assert kind == HELLO_REPLY and status == int(LLMStatusCode.LLM_LINK_FAILED)
        assert "peer speaks version 7" in message and f"version {OUR_VERSION}" in message
        client.close()
    finally:
        dd.finalize()


PREFILL = textwrap.dedent("""
    import json, sys, time, llm_datadist as ld
    cfg = ld.LLMConfig(); cfg.device_id = 0; cfg.enable_cache_manager = True
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": 4 << 20}); cfg.listen_ip_info = sys.argv[1]
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1); dd.init(cfg.generate_options())
    print("ready", flush=True)
    time.sleep(120)
""")


@pytest.mark.timeout(30)
def test_unlink_of_a_dead_peer_is_unlink_failed(decode):
    """Upstream (link_msg_handler.cc UnlinkCluster): a peer it cannot reach is LLM_UNLINK_FAILED."""
    port = free_port()
    prefill = subprocess.Popen([sys.executable, "-c", PREFILL, f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert prefill.stdout.readline().strip() == "ready"
        assert decode.link_clusters([cluster(port)], 3000)[0] == LLMStatusCode.LLM_SUCCESS
        os.kill(prefill.pid, signal.SIGKILL)
        prefill.wait()
        deadline = time.monotonic() + 5
        while decode.link_info(1)["state"] != "broken" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert decode.link_info(1)["state"] == "broken"
        overall, codes = decode.unlink_clusters([cluster(port)], 1000)
        assert codes == [LLMStatusCode.LLM_UNLINK_FAILED]
        assert "could not be told" in decode.last_link_errors[1][1]
        # The local end is gone: a second unlink finds nothing to do.
        assert decode.unlink_clusters([cluster(port)], 1000)[1] == [LLMStatusCode.LLM_SUCCESS]
    finally:
        prefill.kill()
        prefill.wait()
