# SPDX-License-Identifier: Apache-2.0
"""The hardening tests (issue 10) drive real prefill / decode processes (tests/integration's
workers) and attack them with a raw peer (raw_peer.py) or by tampering with an owner's memory."""
from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from workers import WorkerGroup, kill_all_workers  # noqa: E402


def pytest_sessionfinish(session: object, exitstatus: object) -> None:
    kill_all_workers()


@pytest.fixture
def group() -> Iterator[WorkerGroup]:
    g = WorkerGroup()
    try:
        yield g
    finally:
        g.close()
