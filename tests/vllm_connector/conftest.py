# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the vLLM connector tests (processes: vllm_fixtures.py). Every test here carries
the `vllm` marker and is skipped, with the reason, where vLLM (pinned in
requirements/vllm-test.txt) is not installed."""
from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vllm_fixtures import SideGroup  # noqa: E402
from worker_fixtures import pytest_sessionfinish  # noqa: E402,F401 - kills leftover processes


@pytest.fixture(scope="module")
def sides() -> Iterator[SideGroup]:
    g = SideGroup(prefix="vllm-")
    try:
        yield g
    finally:
        g.close()
