# SPDX-License-Identifier: Apache-2.0
"""The worker fixtures every multi-process test directory shares; each conftest.py imports them
(tests/integration, tests/security)."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from workers import WorkerGroup, kill_all_workers


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    kill_all_workers()


@pytest.fixture
def group() -> Iterator[WorkerGroup]:
    g = WorkerGroup()
    try:
        yield g
    finally:
        g.close()
