# SPDX-License-Identifier: Apache-2.0
"""link_clusters / unlink_clusters as upstream has them (issue 11, items 2 and 3), between real
processes: any number of clusters per call, each with its own code; an empty list returned, not
raised; unlink idempotent, also when both ends unlink each other at the same moment."""
from __future__ import annotations

import time

import pytest

from workers import DECODE_ID, PREFILL_ID, cluster, cluster_of, free_port, has_link, start_pair, wait_for

pytestmark = pytest.mark.timeout(180)

SUCCESS = "LLM_SUCCESS"
LINK_FAILED = "LLM_LINK_FAILED"


def test_17_and_40_clusters_in_one_call(group):
    """Upstream: src/llm_datadist/link_mgr/llm_link_manager.cc LinkClusters / UnlinkClusters (a
    16-thread pool, no limit on the clusters of one call, one status per cluster, in order)."""
    specs = [(f"prefill{i}", dict(role="PROMPT", cluster_id=100 + i, listen=True)) for i in range(17)]
    prefills = group.spawn_many(specs + [("decode", dict(role="DECODER", cluster_id=DECODE_ID))])
    decode = prefills.pop()
    ret = decode.link([cluster_of(p) for p in prefills], timeout=5000)
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS] * 17, ret
    for p in prefills:
        assert decode.link_info(p.cluster_id)["state"] == "active"
    ret = decode.unlink([cluster_of(p) for p in prefills])
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS] * 17, ret

    # 40: the 17 live ones interleaved with 23 refused ports; every cluster gets its own code.
    live_positions = [i for i in range(40) if i % 5 in (0, 2)] + [39]  # 17 of 40, spread out
    live, refused = iter(prefills), iter([cluster(300 + i, free_port()) for i in range(23)])
    clusters = [cluster_of(next(live)) if i in live_positions else next(refused) for i in range(40)]
    expected = [SUCCESS if i in live_positions else LINK_FAILED for i in range(40)]
    assert expected.count(SUCCESS) == 17 and len(clusters) == 40
    ret = decode.link(clusters, timeout=5000)
    assert ret["per_cluster"] == expected, ret
    assert ret["overall"] == LINK_FAILED, ret
    ret = decode.unlink(clusters)  # the 23 never linked: nothing to do, success
    assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS] * 40, ret
    for p in prefills:
        assert not has_link(decode, p.cluster_id)


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_both_ends_unlink_at_once_50_rounds(group, transport):
    """Upstream: src/llm_datadist/link_mgr/comm_entity_manager.cc DestroyEntity (a link already
    gone is success) and link_msg_handler.cc UnlinkCluster. Each round both processes unlink
    each other at the same instant; both must get LLM_SUCCESS, never
    LLM_NOTIFY_PROMPT_UNLINK_FAILED."""
    pair = start_pair(group, transport)
    p, d = pair.prefill, pair.decode
    deadline = time.monotonic() + 120
    for round_ in range(50):
        assert time.monotonic() < deadline, f"50 rounds took more than 120 s (at round {round_})"
        start_at = time.monotonic() + 0.05
        rp = p.send("unlink", clusters=[cluster(DECODE_ID)], timeout=2000, start_at=start_at)
        rd = d.send("unlink", clusters=[cluster_of(p)], timeout=2000, start_at=start_at)
        for worker, rid in ((p, rp), (d, rd)):
            reply = worker.wait(rid, 10.0)
            assert reply.ok and reply.result["per_cluster"] == [SUCCESS], (round_, worker.name, reply)
            assert reply.result["overall"] == SUCCESS, (round_, worker.name, reply)
        assert wait_for(lambda: not has_link(p, DECODE_ID) and not has_link(d, PREFILL_ID), 5.0), round_
        d.link_to(p)


def test_repeated_unlink_force_or_not(group):
    """Upstream: src/llm_datadist/link_mgr/comm_entity_manager.cc DestroyEntity: unlinking again,
    with or without force, is LLM_SUCCESS (omni-infer's close_link raises on anything else)."""
    pair = start_pair(group, "shm")
    p, d = pair.prefill, pair.decode
    for force in (False, False, True, False, True):
        ret = d.unlink([cluster_of(p)], force=force)
        assert ret["overall"] == SUCCESS and ret["per_cluster"] == [SUCCESS], (force, ret)
    assert wait_for(lambda: not has_link(p, DECODE_ID), 5.0)
    d.link_to(p)  # and the pair links again


def test_remote_cluster_id_none_and_empty_lists(group):
    """Upstream: src/python/llm_datadist/llm_datadist/v2/llm_datadist.py link_clusters /
    unlink_clusters: check_uint64(remote_cluster_id) raises TypeError for None; an empty list goes
    to the native call, which returns LLM_PARAM_INVALID and no per-cluster codes."""
    d = group.spawn("decode", role="DECODER", cluster_id=DECODE_ID)
    result = d.exec("""
info = ld.LLMClusterInfo()
info.append_remote_ip_info("127.0.0.1", 26000)
errors = []
for call in (lambda: dd.link_clusters([info]), lambda: dd.unlink_clusters([info])):
    try:
        call()
        errors.append(None)
    except TypeError as exc:
        errors.append(str(exc))
result = {"errors": errors, "link": [str(x) for x in dd.link_clusters([])],
          "unlink": [str(x) for x in dd.unlink_clusters([])]}
""")
    assert all(e is not None and "remote_cluster_id" in e for e in result["errors"]), result
    assert result["link"] == ["LLMStatusCode.LLM_PARAM_INVALID", "[]"], result
    assert result["unlink"] == ["LLMStatusCode.LLM_PARAM_INVALID", "[]"], result
