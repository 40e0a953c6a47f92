# SPDX-License-Identifier: Apache-2.0
"""Inputs upstream accepts, accepted here (issue 11, item 5), and where this library accepts
what upstream refuses, one warning per kind naming what upstream would do (item 9), in real
processes."""
from __future__ import annotations

import json
import time

import pytest

from workers import LOOPBACK, PREFILL_ID, cluster_of, free_port, start_pair

pytestmark = pytest.mark.timeout(90)

# Collects the warnings of the `llm_datadist` logger inside a worker, once per worker.
CAPTURE = """
import logging
if not hasattr(w, "records"):
    w.records = []
    class _Keep(logging.Handler):
        def emit(self, record):
            w.records.append(record.getMessage())
    logging.getLogger("llm_datadist").addHandler(_Keep(level=logging.WARNING))
"""


def warnings_of(worker, needle):
    return worker.exec(f"result = [m for m in w.records if {needle!r} in m]")


def test_unknown_pull_kwargs_are_ignored(group):
    """Upstream: src/python/llm_datadist/llm_datadist/v2/cache_manager.py pull_cache / pull_blocks
    read src_layer_range, dst_layer_range and tensor_num_per_layer with kwargs.get and ignore the
    rest. The pull moves every byte; one warning names the ignored keywords."""
    pair = start_pair(group, "shm")
    p, d = pair.prefill, pair.decode
    p.exec(f"""
desc = ld.CacheDesc(2, [2, 8, 64], ld.DataType.DT_FLOAT16, ld.Placement.HOST)
w.src = cm.allocate_cache(desc, [ld.CacheKey({PREFILL_ID}, req_id=7), ld.CacheKey({PREFILL_ID}, req_id=8)])
for i, view in enumerate(w.src.numpy()):
    view[...] = (np.arange(view.size).reshape(view.shape) * (i + 3)) % 251
""")
    result = d.exec(CAPTURE + f"""
desc = ld.CacheDesc(2, [2, 8, 64], ld.DataType.DT_FLOAT16, ld.Placement.HOST)
dst = cm.allocate_cache(desc)
cm.pull_cache(ld.CacheKey({PREFILL_ID}, req_id=7), dst, 0, layer_range=range(0, 1), stream=None)
cm.pull_cache(ld.CacheKey({PREFILL_ID}, req_id=8), dst, 1, layer_range=range(0, 1))
result = [bool((view == (np.arange(view.size).reshape(view.shape) * (i + 3)) % 251).all())
          for i, view in enumerate(dst.numpy())]
""")
    assert result == [True, True]
    found = warnings_of(d, "ignores the keyword arguments")
    assert len(found) == 1 and "['layer_range', 'stream']" in found[0], found


def test_bools_pass_for_ints():
    """Upstream: src/python/llm_datadist/llm_datadist/utils/utils.py check_isinstance (isinstance:
    a bool is an int), so a bool cluster id or block id is accepted."""
    import llm_datadist as ld
    dd = ld.LLMDataDist(ld.LLMRole.DECODER, True)
    assert dd.cluster_id is True
    key = ld.CacheKey(True, req_id=1)
    assert key.cluster_id == 1
    info = ld.LLMClusterInfo()
    info.remote_cluster_id = False
    assert info.remote_cluster_id == 0
    assert ld.BlocksCacheKey(True, 0).cluster_id == 1


def test_permissive_inputs_warn_once_per_kind(group):
    """Upstream: v2/cache_manager.py push_cache / push_blocks (need enable_remote_cache_accessible),
    register_cache (no remote_accessible=True after link), pull_cache (only CacheKeyByIdAndIndex in
    remote-cache-accessible mode); v2/llm_datadist.py link_clusters (local_ip_info unless
    llm.LocalCommRes). Each works here and logs one warning naming what upstream does."""
    pair = start_pair(group, "shm", link=False)
    p, d = pair.prefill, pair.decode
    d.exec(CAPTURE)
    ret = d.link([cluster_of(p)])  # no local_ip_info
    assert ret["per_cluster"] == ["LLM_SUCCESS"], ret
    d.exec(f"""
desc = ld.CacheDesc(1, [4, 1024], ld.DataType.DT_UINT8, ld.Placement.HOST)
w.pushed = cm.allocate_cache(desc)
""")
    cache_id = p.exec("""
w.target = cm.allocate_cache(ld.CacheDesc(1, [4, 1024], ld.DataType.DT_UINT8, ld.Placement.HOST))
result = w.target.cache_id
""")
    for slot in range(3):
        d.exec(f"cm.push_cache(ld.CacheKeyByIdAndIndex({PREFILL_ID}, {cache_id}, {slot}), w.pushed, {slot})")
    pushes = warnings_of(d, "without LLMConfig.enable_remote_cache_accessible")
    assert len(pushes) == 1 and "upstream raises LLM_PARAM_INVALID" in pushes[0], pushes
    links = warnings_of(d, "has no local_ip_info")
    assert len(links) == 1 and "llm.LocalCommRes" in links[0], links


def test_register_after_link_and_cache_key_pulls_warn(group):
    """Upstream: v2/cache_manager.py register_cache (raise_if_true(_is_call_linked and
    remote_accessible)) and pull_cache (check_isinstance CacheKeyByIdAndIndex when
    enable_remote_cache_accessible). A rank-table link() between two members first."""
    opts = {"llm.EnableRemoteCacheAccessible": "1"}
    a = group.spawn("member1", role="PROMPT", cluster_id=1, listen=False, options=opts)
    b = group.spawn("member2", role="DECODER", cluster_id=2, listen=False, options=opts)
    ports = [free_port(), free_port()]
    table = json.dumps({"version": "1.0", "server_count": "1", "status": "completed", "server_list": [
        {"server_id": LOOPBACK, "device": [{"device_id": str(i), "device_ip": LOOPBACK, "rank_id": str(i),
                                            "device_port": str(port)} for i, port in enumerate(ports)]}]})
    comm = {w.name: w.exec(f"result = dd.link('c', {{1: 0, 2: 1}}, {table!r})") for w in (a, b)}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(w.exec(f"result = dd.query_register_mem_status({comm[w.name]}).name") == "OK" for w in (a, b)):
            break
        time.sleep(0.05)
    b.exec(CAPTURE)
    a.exec("""
w.src = cm.allocate_cache(ld.CacheDesc(1, [2, 256], ld.DataType.DT_UINT8, ld.Placement.HOST), [ld.CacheKey(1, req_id=5)])
w.src.numpy()[0][...] = 9
""")
    result = b.exec("""
buf = np.zeros((2, 256), dtype=np.uint8)
reg = cm.register_cache(ld.CacheDesc(1, [2, 256], ld.DataType.DT_UINT8, ld.Placement.HOST), [buf.ctypes.data],
                        remote_accessible=True)
cm.register_cache(ld.CacheDesc(1, [2, 256], ld.DataType.DT_UINT8, ld.Placement.HOST), [buf.ctypes.data + 256],
                  remote_accessible=True)
cm.pull_cache(ld.CacheKey(1, req_id=5), reg, 0)
w.keep = buf
result = int(buf[0].min()), int(buf[0].max())
""")
    assert result == [9, 9]
    assert len(warnings_of(b, "register_cache(remote_accessible=True) after link()")) == 1
    assert len(warnings_of(b, "pull_cache by CacheKey with enable_remote_cache_accessible")) == 1
