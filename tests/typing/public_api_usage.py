# SPDX-License-Identifier: Apache-2.0
"""Code written the way users write against the API, for mypy only (never run; not collected by
pytest): pyproject's [tool.mypy] checks it strictly with the package. The lines marked
`# type: ignore[code]` are mistakes a type checker must catch; mypy's strict mode reports an
ignore that is no longer needed, so the check fails if the types stop catching them."""
import json
from typing import Dict, List, Tuple

import llm_datadist as ld
from llm_datadist import (BlocksCacheKey, CacheDesc, DataType, LLMClusterInfo, LLMConfig, LLMDataDist,
                          LLMException, LLMRole, LLMStatusCode, Placement)
from llm_datadist.v2.llm_types import Cache, Memtype


def decode_pull(port: int) -> Tuple[LLMStatusCode, List[LLMStatusCode]]:
    cfg = LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.mem_pool_cfg = json.dumps({"memory_size": 1 << 20})
    options: Dict[str, str] = cfg.generate_options()
    decode = LLMDataDist(LLMRole.DECODER, 2)
    decode.init(options)
    cluster = LLMClusterInfo()
    cluster.remote_cluster_id = 1
    cluster.append_remote_ip_info("127.0.0.1", port)
    ret, rets = decode.link_clusters([cluster], timeout=3000)
    local: Cache = decode.cache_manager.allocate_blocks_cache(CacheDesc(2, [8, 4096], DataType.DT_UINT8,
                                                                         Placement.HOST))
    try:
        decode.cache_manager.pull_blocks(BlocksCacheKey(1, 0), local, src_blocks=[1, 2], dst_blocks=[0, 1])
    except LLMException as e:
        if e.status_code == LLMStatusCode.LLM_KV_CACHE_NOT_EXIST:   # members the table defines
            print(e.to_dict()["action"], e.recoverable)
    return ret, rets


def mistakes() -> None:
    LLMDataDist(LLMRole.DECODER, "2")  # type: ignore[arg-type]
    LLMStatusCode.LLM_NO_SUCH_CODE  # type: ignore[attr-defined]
    code: str = LLMStatusCode.LLM_SUCCESS  # type: ignore[assignment]
    print(code, Memtype, ld.__version__ + 1)  # type: ignore[operator]
