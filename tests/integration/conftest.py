# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the multi-process tests: real prefill / decode processes (tests/integration/
worker_main.py) on loopback, over each transport. Every fixture kills its processes at teardown,
also when the test failed; a session hook kills anything left over.

* `transport`: "shm" (the default a same-host link picks), "tcp" (forced with option
  llmdd.Transport="tcp" on both ends) and, where UCX loads, "ucx" (forced with
  llmdd.Transport="ucx": one-sided UCX gets, here over UCX's tcp on the loopback device).
* `spawn`: factory -> an initialized Worker (function scope); `group`: its WorkerGroup.
* `prefill` (PROMPT, cluster 1, listening), `decode` (DECODER, cluster 2, not listening),
  `linked_pair` (decode linked to prefill): fresh processes per test, over `transport`.
* `pair`: a linked pair shared by a test module (per transport), reset between tests (every
  cache freed) and re-created when a test left it unhealthy.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Iterator, Optional

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workers import (DECODE_ID, PREFILL_ID, Pair, RemoteError, Worker, WorkerGroup,  # noqa: E402,F401
                     kill_all_workers, start_pair)
from worker_fixtures import group, pytest_sessionfinish  # noqa: E402,F401 - shared with tests/security

# UCX between the test's processes: tcp on the loopback device only (workers inherit this).
os.environ.setdefault("UCX_TLS", "tcp")
os.environ.setdefault("UCX_NET_DEVICES", "lo")


def _ucx_available() -> bool:
    from llm_datadist import _core
    return bool(_core.ucx_info()["available"])


TRANSPORTS = ["shm", "tcp"] + (["ucx"] if _ucx_available() else [])


@pytest.fixture(params=TRANSPORTS)
def transport(request: Any) -> str:
    return request.param


@pytest.fixture
def spawn(group: WorkerGroup) -> Callable[..., Worker]:
    """spawn(name, env=None, **init) -> an initialized Worker; see Worker.init for init's
    keywords (role, cluster_id, listen=True, transport, secret, sync_kv_timeout, ...)."""
    def _spawn(name: str, env: Optional[Dict[str, str]] = None, **init: Any) -> Worker:
        return group.spawn(name, env=env, **init)
    return _spawn


@pytest.fixture
def prefill(group: WorkerGroup, transport: str) -> Worker:
    return group.spawn("prefill", role="PROMPT", cluster_id=PREFILL_ID, listen=True, transport=transport)


@pytest.fixture
def decode(group: WorkerGroup, transport: str) -> Worker:
    return group.spawn("decode", role="DECODER", cluster_id=DECODE_ID, transport=transport)


@pytest.fixture
def linked_pair(group: WorkerGroup, transport: str) -> Pair:
    return start_pair(group, transport)


class SharedPair:
    """A linked pair kept for a whole module; `ensure()` re-creates it when unhealthy."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.group = WorkerGroup(prefix=f"shared-{transport}-")
        self.pair: Optional[Pair] = None
        self.failure: Optional[str] = None

    def healthy(self) -> bool:
        if self.pair is None or not (self.pair.prefill.alive and self.pair.decode.alive):
            return False
        try:
            info = self.pair.decode.link_info(PREFILL_ID)
        except (RemoteError, AssertionError):
            return False
        return info.get("state") == "active"

    def ensure(self) -> Pair:
        if self.failure is not None:  # do not start processes again for every test of the module
            pytest.fail(f"the shared {self.transport} pair failed to start earlier in this module: "
                        f"{self.failure}", pytrace=False)
        if not self.healthy():
            self.group.close()
            try:
                self.pair = start_pair(self.group, self.transport)
            except BaseException as exc:
                self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self.group.close()
                raise
        assert self.pair is not None
        return self.pair

    def after_test(self) -> None:
        if self.pair is None:
            return
        for w in (self.pair.prefill, self.pair.decode):
            try:
                out = w.reset()
            except (RemoteError, AssertionError):
                self.pair = None  # re-created by the next ensure()
                return
            if out["errors"]:
                self.pair = None
                return

    def close(self) -> None:
        self.group.close()


@pytest.fixture(scope="module", params=TRANSPORTS)
def shared_pair(request: Any) -> Iterator[SharedPair]:
    holder = SharedPair(request.param)
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture
def pair(shared_pair: SharedPair) -> Iterator[Pair]:
    p = shared_pair.ensure()
    try:
        yield p
    finally:
        shared_pair.after_test()
