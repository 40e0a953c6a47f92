# SPDX-License-Identifier: Apache-2.0
"""Two hosts on one machine (issue 12 item 3): the prefill runs in one network namespace, the
decodes in another, joined by a veth pair (llm_datadist._bench.netns); the workers are
tests/integration's.

* `hosts`: a fresh netns.Hosts(2) per test (a partition or a rate limit never leaks into the
  next test); skipped, saying why, where namespaces cannot be made (not root, no `ip`, refused).
* `transport`: "tcp" and "ucx", forced on both ends with llmdd.Transport; the ucx cases skip
  unless the core has a UCX transport that found its library (`_core.ucx_info()`).
* `cross_pair`: prefill on hosts[0] (cluster 1, listening on its address), decode on hosts[1]
  (cluster 2), linked (twohost_workers.start_cross_pair for other settings).
Teardown kills every worker and deletes the namespaces, also when a test fails; the session
hook catches anything left over.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from llm_datadist._bench import netns  # noqa: E402
from twohost_workers import TRANSPORTS, start_cross_pair, ucx_unavailable  # noqa: E402
from workers import Pair, WorkerGroup, kill_all_workers  # noqa: E402
from worker_fixtures import group  # noqa: E402,F401 - shared with tests/integration


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    kill_all_workers()
    netns.close_all()


@pytest.fixture(params=TRANSPORTS)
def transport(request: Any) -> str:
    if request.param == "ucx":
        why = ucx_unavailable()
        if why:
            pytest.skip(why)
    return request.param


@pytest.fixture
def hosts() -> Iterator[netns.Hosts]:
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    with netns.Hosts(2) as h:
        yield h


@pytest.fixture
def cross_pair(group: WorkerGroup, hosts: netns.Hosts, transport: str) -> Pair:
    return start_cross_pair(group, hosts, transport)
