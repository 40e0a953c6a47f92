# SPDX-License-Identifier: Apache-2.0
"""Upstream conformance tests (issue 11): each test names, in its docstring, the upstream
LLM-DataDist source file (hicann/hixl) whose behaviour it checks. Multi-process tests use
tests/integration's workers: real prefill / decode processes on loopback."""
from __future__ import annotations

import os
import sys
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from workers import Pair, WorkerGroup, start_pair  # noqa: E402
from worker_fixtures import group, pytest_sessionfinish  # noqa: E402,F401 - shared with tests/integration


@pytest.fixture(params=["shm", "tcp"])
def transport(request: Any) -> str:
    return request.param


@pytest.fixture
def linked_pair(group: WorkerGroup, transport: str) -> Pair:
    return start_pair(group, transport)
