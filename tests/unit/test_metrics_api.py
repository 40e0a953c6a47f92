# SPDX-License-Identifier: Apache-2.0
"""llm_datadist.metrics in one process: the snapshot's shape, the switch, the socket, the Prometheus
collector and top's frame from given snapshots. Counts after real pulls between two processes:
tests/integration/test_metrics_scrape.py."""
import copy
import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

import llm_datadist as ld
from config_helpers import make_config
from llm_datadist import LLMException, LLMRole, LLMStatusCode
from llm_datadist import metrics as m
from llm_datadist._top import render


def _initialized(cluster_id=1, **extra):
    dd = ld.LLMDataDist(LLMRole.PROMPT, cluster_id)
    options = dict(make_config().generate_options())
    options.update(extra)
    dd.init(options)
    return dd


def test_fresh_snapshot_is_all_zeros_and_names_every_kind():
    dd = _initialized()
    try:
        snap = dd.metrics()
        assert snap["enabled"] is True and snap["cluster_id"] == 1
        bounds = snap["latency_bounds_s"]
        assert len(bounds) == 27 and bounds[0] == 1e-6 and bounds[-1] == pytest.approx(67.108864)
        assert all(b2 == 2 * b1 for b1, b2 in zip(bounds, bounds[1:]))
        for part in ("totals", "unlinked"):
            assert tuple(snap[part]) == m.KINDS
            for k in snap[part].values():
                assert k == {"operations": 0, "bytes": 0, "errors": 0, "latency_ns_sum": 0,
                             "latency_buckets": [0] * 28, "errors_by_code": {}}
        assert snap["links"] == {} and (snap["links_up"], snap["links_broken"], snap["links_closed"]) == (0, 0, 0)
        host = snap["pools"]["host"]
        assert host["capacity"] == 64 << 20 and host["used_bytes"] == 0
        json.dumps(snap)  # plain data
    finally:
        dd.finalize()


def test_failed_operations_without_a_link_count_by_code():
    dd = _initialized()
    try:
        cm = dd.cache_manager
        cache = cm.allocate_cache(ld.CacheDesc(1, [2, 64], ld.DataType.DT_FLOAT16, ld.Placement.DEVICE))
        for _ in range(3):
            with pytest.raises(LLMException) as info:
                cm.pull_cache(ld.CacheKey(7, 1, 0), cache, 0)
            assert info.value.status_code == LLMStatusCode.LLM_NOT_YET_LINK
        snap = dd.metrics()
        for part in ("totals", "unlinked"):
            pull = snap[part]["pull_cache"]
            assert pull["errors"] == 3 and pull["errors_by_code"] == {"LLM_NOT_YET_LINK": 3}, pull
            assert pull["operations"] == 0 and sum(pull["latency_buckets"]) == 0
        assert snap["pools"]["device"]["used_bytes"] > 0
    finally:
        dd.finalize()


def test_metrics_off_records_nothing():
    dd = _initialized(**{"llmdd.Metrics": "0"})
    try:
        cm = dd.cache_manager
        cache = cm.allocate_cache(ld.CacheDesc(1, [2, 64], ld.DataType.DT_FLOAT16, ld.Placement.DEVICE))
        with pytest.raises(LLMException):
            cm.pull_cache(ld.CacheKey(7, 1, 0), cache, 0)
        snap = dd.metrics()
        assert snap["enabled"] is False
        assert all(k["errors"] == 0 for k in snap["totals"].values()), snap["totals"]
    finally:
        dd.finalize()


@pytest.mark.parametrize("value", ["2", "on", ""])
def test_metrics_switch_takes_0_or_1(value):
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    options = dict(make_config().generate_options(), **{"llmdd.Metrics": value})
    with pytest.raises(LLMException, match=f'llmdd.Metrics "{value}"') as info:
        dd.init(options)
    assert info.value.status_code == LLMStatusCode.LLM_PARAM_INVALID


def test_import_does_not_import_prometheus_client():
    code = "import sys, llm_datadist, llm_datadist.metrics; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_latency_quantile():
    bounds = [1e-6 * 2 ** i for i in range(27)]
    assert m.latency_quantile(bounds, [0] * 28, 0.5) is None
    buckets = [0] * 28
    buckets[3] = 10  # all in (4 us, 8 us]
    assert m.latency_quantile(bounds, buckets, 0.5) == pytest.approx(6e-6)
    buckets[10] = 10  # and as many in (512 us, 1024 us]
    assert 4e-6 < m.latency_quantile(bounds, buckets, 0.25) <= 8e-6
    assert 512e-6 < m.latency_quantile(bounds, buckets, 0.9) <= 1024e-6


# ---- a snapshot as the core gives it, for the readers -------------------------------------------------

def _synthetic(ops=10, nbytes=40960, errors=1, t=100.0):
    kinds = {k: {"operations": 0, "bytes": 0, "errors": 0, "latency_ns_sum": 0, "latency_buckets": [0] * 28,
                 "errors_by_code": {}} for k in m.KINDS}
    link = copy.deepcopy(kinds)
    link["pull_blocks"].update(operations=ops, bytes=nbytes, errors=errors, latency_ns_sum=ops * 5000,
                               errors_by_code={"LLM_KV_CACHE_NOT_EXIST": errors} if errors else {})
    link["pull_blocks"]["latency_buckets"][3] = ops
    return {"pid": 42, "time": t, "instance": {
        "enabled": True, "cluster_id": 2, "latency_bounds_s": [1e-6 * 2 ** i for i in range(27)],
        "totals": link, "unlinked": kinds, "links_up": 1, "links_broken": 0, "links_closed": 0,
        "links": {1: {"transport": "shm", "state": "active", "channel": "unix", "peer_pid": 7, "kinds": link}},
        "pools": {"host": {"capacity": 1 << 20, "used_bytes": 1 << 19}, "device": None}}}


def test_collector_exposition():
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families
    snap = _synthetic()
    text = m.exposition(lambda: snap["instance"])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    peer = (("cluster", "2"), ("kind", "pull_blocks"), ("peer", "1"))
    assert samples[("llmdd_bytes_total", peer)] == 40960
    assert samples[("llmdd_operations_total", peer)] == 10
    assert samples[("llmdd_latency_seconds_count", peer)] == 10
    assert samples[("llmdd_latency_seconds_sum", peer)] == pytest.approx(50e-6)
    le = lambda v: tuple(sorted(peer + (("le", v),)))  # noqa: E731
    assert samples[("llmdd_latency_seconds_bucket", le("4e-06"))] == 0
    assert samples[("llmdd_latency_seconds_bucket", le("8e-06"))] == 10
    assert samples[("llmdd_latency_seconds_bucket", le("+Inf"))] == 10
    assert samples[("llmdd_errors_total", tuple(sorted(peer + (("code", "LLM_KV_CACHE_NOT_EXIST"),))))] == 1
    assert samples[("llmdd_link_info", (("channel", "unix"), ("cluster", "2"), ("peer", "1"), ("state", "active"),
                                        ("transport", "shm")))] == 1
    assert samples[("llmdd_pool_used_bytes", (("cluster", "2"), ("pool", "host")))] == 1 << 19
    assert ("llmdd_pool_used_bytes", (("cluster", "2"), ("pool", "device"))) not in samples
    assert samples[("llmdd_metrics_enabled", (("cluster", "2"),))] == 1
    # the owner-side kinds have no series without a link
    assert not any(dict(labels).get("peer") == "" and dict(labels)["kind"].startswith("serve_")
                   for _, labels in samples if "kind" in dict(labels))
    assert m.exposition(lambda: None) == ""


def test_top_frame_rates_from_two_snapshots():
    before, now = _synthetic(ops=10, nbytes=10 * 4096, t=100.0), _synthetic(ops=30, nbytes=30 * 4096, t=102.0)
    frame = render(now, before, 2.0)
    row = next(line.split() for line in frame.splitlines() if line.startswith("1 "))
    assert row[:4] == ["1", "shm", "active", "pull_blocks"]
    assert float(row[4]) == pytest.approx(10.0)            # (30 - 10) ops / 2 s
    assert float(row[5]) == pytest.approx(20 * 4096 / 2 / 1e6, abs=0.05)
    assert row[6] == "6us" and row[7] == "1"                # median of (4, 8] us; errors so far
    assert "1 LLM_KV_CACHE_NOT_EXIST" in frame and "rates over 2.0 s" in frame
    first = render(before, None, None)
    assert "rates over" not in first and first.splitlines()[2].split()[4] == "OPS/S"
    assert "no initialized LLMDataDist" in render({"pid": 1, "time": 0, "instance": None}, None, None)


# ---- the socket ------------------------------------------------------------------------------------

def test_socket_serves_the_initialized_instance(tmp_path):
    path = m.serve_socket(str(tmp_path / "s.sock"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert m.serve_socket(path) == path  # once per path
    data = m.read_socket(path)
    assert data["pid"] == os.getpid() and data["instance"] is None
    dd = _initialized(cluster_id=5)
    try:
        data = m.read_socket(path)
        assert data["instance"]["cluster_id"] == 5 and data["instance"]["enabled"] is True
    finally:
        dd.finalize()
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "metrics", "--socket", path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["pid"] == os.getpid(), out.stderr


def test_reading_a_silent_socket_is_bounded(tmp_path):
    path = str(tmp_path / "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(path)
    mute.listen(1)  # accepts (in the backlog) and never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError):  # socket.timeout / TimeoutError
            m.read_socket(path, timeout_s=0.5)
        assert time.monotonic() - t0 < 5
        out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "top", "--socket", path, "--once",
                              "--timeout", "0.5"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "mute.sock" in out.stderr, out
    finally:
        mute.close()
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "top", "--pid", "999999999", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "LLMDD_METRICS_SOCKET=1" in out.stderr, out


def test_http_endpoint_in_process():
    pytest.importorskip("prometheus_client")
    import urllib.request
    port = m.serve(0)
    dd = _initialized(cluster_id=9)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'llmdd_metrics_enabled{cluster="9"} 1.0' in text, text[:2000]
    finally:
        dd.finalize()


def test_prometheus_client_is_an_extra_not_a_dependency():
    import importlib.metadata
    requires = importlib.metadata.requires("llm-datadist") or []
    assert not any(r.startswith("prometheus") and "extra ==" not in r for r in requires), requires
    assert "metrics" in (importlib.metadata.metadata("llm-datadist").get_all("Provides-Extra") or [])
    test_extra = [r for r in requires if 'extra == "test"' in r]
    assert any("llm-datadist[metrics]" in r for r in test_extra) and any(r.startswith("pexpect") for r in test_extra), \
        test_extra
