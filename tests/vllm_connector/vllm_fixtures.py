# SPDX-License-Identifier: Apache-2.0
"""Processes running vllm_side.py (vLLM's real Scheduler with LLMDataDistConnector), started,
driven and killed with the multi-process harness of tests/integration/workers.py."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any, Dict, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import workers  # noqa: E402
from workers import Worker, WorkerGroup  # noqa: E402

# vLLM and its imports take tens of seconds on a busy 2-core machine
SIDE_READY_TIMEOUT = 240.0


class VllmSide(Worker):
    """A Worker whose process is vllm_side.py instead of worker_main.py (same protocol)."""

    def __init__(self, name: str, env: Optional[Dict[str, str]] = None) -> None:
        super().__init__(name, env=env)
        self.env["PYTHONPATH"] = HERE + os.pathsep + self.env["PYTHONPATH"]

    def start(self) -> "VllmSide":
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "vllm_side"], cwd=HERE, env=self.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errfile,
                                     start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        with workers._live_lock:
            workers._live_workers.add(self)
        self._reader = threading.Thread(target=self._read_loop, name=f"reader-{self.name}", daemon=True)
        self._reader.start()
        return self


class SideGroup(WorkerGroup):
    def start(self, name: str, env: Optional[Dict[str, str]] = None) -> VllmSide:
        w = VllmSide(self.prefix + name, env=env)
        self.workers.append(w)
        return w.start()


def init_side(w: VllmSide, **kw: Any) -> Dict[str, Any]:
    w.wait_ready(SIDE_READY_TIMEOUT)
    return w.call("init", deadline=SIDE_READY_TIMEOUT, **kw)
