# SPDX-License-Identifier: Apache-2.0
"""Rank-table link() in one process: upstream's argument rules, each bad input with its exact
exception, and a comm whose peer never comes up ending FAILED at llm.LinkTotalTime with the
reason. Two and three processes linking for real: tests/integration/test_rank_table.py."""
import json
import time

import pytest

import llm_datadist as ld
from llm_datadist import LLMException, LLMStatusCode, RegisterMemStatus
from llm_datadist._rank_table import DEFAULT_BASE_PORT, parse_members

from config_helpers import make_config

PARAM_INVALID = LLMStatusCode.LLM_PARAM_INVALID


def rank_table(*devices):
    """An HCCL rank table (version 1.0), one server per device: (device_ip, device_id, rank_id[, port])."""
    servers = []
    for d in devices:
        entry = {"device_id": str(d[1]), "device_ip": d[0], "rank_id": str(d[2])}
        if len(d) > 3:
            entry["device_port"] = str(d[3])
        servers.append({"server_id": d[0], "device": [entry]})
    return json.dumps({"version": "1.0", "server_count": str(len(servers)), "server_list": servers,
                       "status": "completed"})


@pytest.fixture
def dd():
    cfg = make_config()
    cfg.link_total_time = 1  # seconds: a comm whose peer never shows fails fast
    d = ld.LLMDataDist(ld.LLMRole.DECODER, 1)
    d.init(cfg.generate_options())
    yield d
    d.finalize()


def test_addresses_come_from_device_ip_and_port_or_base_plus_device_id(monkeypatch):
    table = rank_table(("10.0.0.1", 3, 0), ("10.0.0.2", 5, 1, 30000))
    a, b = parse_members(table, {7: 0, 8: 1})
    assert (a.cluster_id, a.rank, a.ip, a.port) == (7, 0, "10.0.0.1", DEFAULT_BASE_PORT + 3)
    assert (b.cluster_id, b.rank, b.ip, b.port) == (8, 1, "10.0.0.2", 30000)
    monkeypatch.setenv("LLMDD_COMM_BASE_PORT", "40000")
    assert parse_members(table, {7: 0, 8: 1})[0].port == 40003


@pytest.mark.parametrize("args, exc, match", [
    ((1, {1: 0, 2: 1}), TypeError, "comm_name"),
    (("", {1: 0, 2: 1}), PARAM_INVALID, "comm_name must have 1 to 127"),
    (("x" * 128, {1: 0, 2: 1}), PARAM_INVALID, "comm_name must have 1 to 127"),
    (("c", [(1, 0), (2, 1)]), TypeError, "cluster_rank_info"),
    (("c", {1: 0}), PARAM_INVALID, "2 to 4 entries"),
    (("c", {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}), PARAM_INVALID, "2 to 4 entries"),
    (("c", {1: 1, 2: 0}), PARAM_INVALID, "ascending"),
    (("c", {1: 0, 2: 0}), PARAM_INVALID, "unique and ascending"),
    (("c", {2: 0, 3: 1}), PARAM_INVALID, r"does not include this cluster \(1\)"),
    (("c", {1: 0, "2": 1}), TypeError, "cluster_rank_info key"),
    (("c", {1: 0, 2: -1}), ValueError, r"cluster_rank_info\[2\]"),
    (("c", {1: 0, 2: 2**32}), ValueError, r"cluster_rank_info\[2\]"),
])
def test_bad_arguments(dd, args, exc, match):
    table = rank_table(("127.0.0.1", 0, 0), ("127.0.0.1", 1, 1))
    if isinstance(exc, LLMStatusCode):
        with pytest.raises(LLMException, match=match) as info:
            dd.link(*args, table)
        assert info.value.status_code == exc
    else:
        with pytest.raises(exc, match=match):
            dd.link(*args, table)


@pytest.mark.parametrize("table, match", [
    (b"{}", "rank_table only support"),
    ("not json", "rank_table is not valid JSON"),
    ("{}", "no server_list"),
    (json.dumps({"server_list": [{"device": [{"rank_id": "0", "device_ip": "127.0.0.1"}]}]}),
     r"no device with rank_id 1 \(cluster 2\)"),
    (json.dumps({"server_list": [{"device": [{"rank_id": "0", "device_ip": "nowhere"},
                                             {"rank_id": "1", "device_ip": "127.0.0.1"}]}]}), "not an IP address"),
    (json.dumps({"server_list": [{"device": [{"rank_id": "0"}, {"rank_id": "1", "device_ip": "127.0.0.1"}]}]}),
     r"\(rank 0\) has no device_ip"),
    (json.dumps({"server_list": [{"device": [{"rank_id": "zero", "device_ip": "127.0.0.1"}]}]}),
     "rank_id must be an integer"),
    (rank_table(("127.0.0.1", 0, 0, 70000), ("127.0.0.1", 1, 1)), r"port 70000, outside \[1, 65535\]"),
    (rank_table(("127.0.0.1", 0, 0), ("127.0.0.1", 1, 0)), "rank_id 0 twice"),
])
def test_bad_rank_tables(dd, table, match):
    exc_type = TypeError if isinstance(table, bytes) else LLMException
    with pytest.raises(exc_type, match=match) as info:
        dd.link("c", {1: 0, 2: 1}, table)
    if exc_type is LLMException:   # upstream: HCCL cannot init from the table
        assert info.value.status_code == LLMStatusCode.LLM_LINK_FAILED


def test_unknown_comm_ids(dd):
    for call in (dd.unlink, dd.query_register_mem_status):
        with pytest.raises(LLMException, match="comm_id 42 is not linked") as info:
            call(42)
        assert info.value.status_code == LLMStatusCode.LLM_NOT_YET_LINK
        with pytest.raises(TypeError, match="comm_id"):
            call("42")


def wait_status(dd, comm_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dd.query_register_mem_status(comm_id)
        if status != RegisterMemStatus.PREPARING:
            return status
        time.sleep(0.02)
    raise AssertionError(f"comm {comm_id} still PREPARING after {timeout} s")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_peer_that_never_comes_fails_at_link_total_time_with_the_reason(dd):
    # We are rank 1: we connect to rank 0, where nothing listens.
    port = free_port()
    table = rank_table(("127.0.0.1", 0, 0, port), ("127.0.0.1", 1, 1, free_port()))
    t0 = time.monotonic()
    comm_id = dd.link("lonely", {2: 0, 1: 1}, table)
    assert time.monotonic() - t0 < 0.5, "link must return at once"
    assert dd.query_register_mem_status(comm_id) == RegisterMemStatus.PREPARING
    assert wait_status(dd, comm_id) == RegisterMemStatus.FAILED
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 5.0, elapsed
    info = dd.comm_info(comm_id)
    assert "not linked within 1 s" in info["error"] and f"127.0.0.1:{port}" in info["error"], info
    dd.unlink(comm_id)
    with pytest.raises(LLMException, match="not linked"):
        dd.query_register_mem_status(comm_id)


def test_rank_zero_listens_at_its_address_and_names_a_conflict(dd):
    port = free_port()
    table = rank_table(("127.0.0.1", 0, 0, port), ("127.0.0.1", 1, 1, free_port()))
    comm_id = dd.link("first", {1: 0, 2: 1}, table)
    assert dd.listen_address == f"127.0.0.1:{port}"
    with pytest.raises(LLMException, match="comm_name 'first' is already linked"):
        dd.link("first", {1: 0, 2: 1}, table)
    other = rank_table(("127.0.0.1", 0, 0, free_port()), ("127.0.0.1", 1, 1, free_port()))
    with pytest.raises(LLMException, match=f"already listens at 127.0.0.1:{port} but the rank table puts it at") as info:
        dd.link("second", {1: 0, 2: 1}, other)
    assert info.value.status_code == PARAM_INVALID
    assert wait_status(dd, comm_id) == RegisterMemStatus.FAILED  # nobody connected within 1 s
    dd.unlink(comm_id)
