# SPDX-License-Identifier: Apache-2.0
"""Rank-table API codes as upstream's: src/llm_datadist/link_mgr/comm_link_manager.cc (Unlink and
QueryRegisterMemStatus answer LLM_NOT_YET_LINK for a comm id they do not hold, lines 392 and
429-442; Link reports an HCCL init failure as LLM_LINK_FAILED and checks the 512-comm limit and
its own cluster's presence before, with LLM_PARAM_INVALID) and
src/python/llm_datadist/llm_datadist/v2/llm_datadist.py `link` / `unlink` /
`query_register_mem_status` (the argument checks and their order)."""
import json
import time

import pytest

import llm_datadist as ld
from llm_datadist import LLMException, LLMStatusCode, RegisterMemStatus

from config_helpers import make_config


def rank_table(*devices):
    """HCCL rank table 1.0: one server per (device_ip, device_id, rank_id, device_port)."""
    servers = [{"server_id": ip, "device": [{"device_id": str(dev), "device_ip": ip, "rank_id": str(rank),
                                             "device_port": str(port)}]}
               for ip, dev, rank, port in devices]
    return json.dumps({"version": "1.0", "server_count": str(len(servers)), "server_list": servers,
                       "status": "completed"})


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dd():
    cfg = make_config()
    cfg.link_total_time = 1  # seconds
    d = ld.LLMDataDist(ld.LLMRole.DECODER, 1)
    d.init(cfg.generate_options())
    yield d
    d.finalize()


def raises_code(code, call, *args):
    with pytest.raises(LLMException) as info:
        call(*args)
    assert info.value.status_code == code, (info.value.status_code, str(info.value))
    return str(info.value)


def test_unknown_comm_id_is_not_yet_link(dd):
    for call in (dd.unlink, dd.query_register_mem_status):
        message = raises_code(LLMStatusCode.LLM_NOT_YET_LINK, call, 7)
        assert "comm_id 7" in message
        with pytest.raises(ValueError):
            call(-1)           # check_uint64
        with pytest.raises(TypeError):
            call("7")


def test_unlinked_comm_id_is_not_yet_link(dd):
    table = rank_table(("127.0.0.1", 0, 0, free_port()), ("127.0.0.1", 1, 1, free_port()))
    comm_id = dd.link("codes", {2: 0, 1: 1}, table)   # nothing listens at rank 0: stays PREPARING, then FAILED
    assert dd.query_register_mem_status(comm_id) in (RegisterMemStatus.PREPARING, RegisterMemStatus.FAILED)
    dd.unlink(comm_id)
    raises_code(LLMStatusCode.LLM_NOT_YET_LINK, dd.query_register_mem_status, comm_id)
    raises_code(LLMStatusCode.LLM_NOT_YET_LINK, dd.unlink, comm_id)


@pytest.mark.parametrize("table", [
    "not json",
    "{}",
    json.dumps({"server_list": [{"device": [{"rank_id": "0", "device_ip": "127.0.0.1"}]}]}),   # no rank 1
    json.dumps({"server_list": [{"device": [{"rank_id": "0"}, {"rank_id": "1", "device_ip": "127.0.0.1"}]}]}),
])
def test_a_table_that_cannot_be_linked_is_link_failed(dd, table):
    raises_code(LLMStatusCode.LLM_LINK_FAILED, dd.link, "c", {1: 0, 2: 1}, table)


def test_a_comm_name_in_use_is_link_failed(dd):
    table = rank_table(("127.0.0.1", 0, 0, free_port()), ("127.0.0.1", 1, 1, free_port()))
    comm_id = dd.link("taken", {2: 0, 1: 1}, table)
    try:
        message = raises_code(LLMStatusCode.LLM_LINK_FAILED, dd.link, "taken", {2: 0, 1: 1}, table)
        assert f"comm_id {comm_id}" in message
    finally:
        dd.unlink(comm_id)


def test_argument_checks_run_in_upstreams_order(dd):
    table = rank_table(("127.0.0.1", 0, 0, free_port()), ("127.0.0.1", 1, 1, free_port()))
    # More than 4 entries is checked before the key and value ranges.
    raises_code(LLMStatusCode.LLM_PARAM_INVALID, dd.link, "c", {1: 0, 2: 1, 3: 2, 4: 3, -5: 4}, table)
    # rank_table's type is checked before "at least 2 entries" and the rank order.
    with pytest.raises(TypeError, match="rank_table"):
        dd.link("c", {1: 0}, b"{}")
    with pytest.raises(TypeError, match="rank_table"):
        dd.link("c", {1: 1, 2: 0}, 5)
    raises_code(LLMStatusCode.LLM_PARAM_INVALID, dd.link, "c", {1: 0}, table)
    raises_code(LLMStatusCode.LLM_PARAM_INVALID, dd.link, "c", {1: 1, 2: 0}, table)
    # This cluster's absence is LLM_PARAM_INVALID before the table is read (upstream: before HCCL).
    raises_code(LLMStatusCode.LLM_PARAM_INVALID, dd.link, "c", {2: 0, 3: 1}, "not json")


def test_a_failed_comm_reads_failed_until_unlinked(dd):
    table = rank_table(("127.0.0.1", 0, 0, free_port()), ("127.0.0.1", 1, 1, free_port()))
    comm_id = dd.link("lonely", {2: 0, 1: 1}, table)
    deadline = time.monotonic() + 10
    while dd.query_register_mem_status(comm_id) == RegisterMemStatus.PREPARING and time.monotonic() < deadline:
        time.sleep(0.02)
    # Upstream keeps a failed comm (status FAILED, no exception) until unlink removes it.
    assert dd.query_register_mem_status(comm_id) == RegisterMemStatus.FAILED
    assert dd.query_register_mem_status(comm_id) == RegisterMemStatus.FAILED
    dd.unlink(comm_id)
    raises_code(LLMStatusCode.LLM_NOT_YET_LINK, dd.query_register_mem_status, comm_id)
