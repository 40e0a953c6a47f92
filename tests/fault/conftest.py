# SPDX-License-Identifier: Apache-2.0
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fault_harness import FaultBuild, build_all  # noqa: E402


@pytest.fixture(scope="session")
def fault_build(tmp_path_factory) -> FaultBuild:
    """The fake CUDA driver and runtime, the probe linked against them, and the installed shim."""
    return build_all(tmp_path_factory.mktemp("fault_build"))
