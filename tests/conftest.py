# SPDX-License-Identifier: Apache-2.0
import pytest

import llm_datadist as ld

from config_helpers import make_config


@pytest.fixture
def datadist():
    """An initialized PROMPT instance (cluster 1) with 64 MiB host and CPU-device pools."""
    dd = ld.LLMDataDist(ld.LLMRole.PROMPT, 1)
    dd.init(make_config().generate_options())
    yield dd
    dd.finalize()


@pytest.fixture
def cache_manager(datadist):
    return datadist.cache_manager
