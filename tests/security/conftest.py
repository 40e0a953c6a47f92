# SPDX-License-Identifier: Apache-2.0
"""The hardening tests (issue 10) drive real prefill / decode processes (tests/integration's
workers) and attack them with a raw peer (raw_peer.py) or by tampering with an owner's memory."""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from worker_fixtures import group, pytest_sessionfinish  # noqa: E402,F401 - shared with tests/integration
