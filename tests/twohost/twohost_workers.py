# SPDX-License-Identifier: Apache-2.0
"""Workers on two hosts (netns.py): a prefill / decode pair across namespaces, a link by the
peer's namespace address, and whether the ucx cases can run. Imported by conftest.py and the
tests (a module of its own: `from conftest import` resolves to whichever conftest came last)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import netns
from workers import DECODE_ID, PREFILL_ID, Pair, Worker, WorkerGroup, cluster_of

TRANSPORTS = ["tcp", "ucx"]


def ucx_unavailable() -> Optional[str]:
    """Why the ucx cases cannot run here, or None."""
    from llm_datadist import _core
    if not hasattr(_core, "ucx_info"):
        return "this build of the core has no UCX transport (_core.ucx_info missing)"
    info = _core.ucx_info()
    if not info.get("available"):
        return f"UCX not available here: {info.get('reason') or info.get('error') or info}"
    return None


def link_across(decode: Worker, prefill: Worker, ip: str, timeout_ms: int = 10000) -> Dict[str, Any]:
    """Links `decode` to `prefill` listening at `ip` (its namespace address); asserts success."""
    ret = decode.link([cluster_of(prefill, ip=ip)], timeout=timeout_ms)
    assert ret["overall"] == "LLM_SUCCESS" and ret["per_cluster"] == ["LLM_SUCCESS"], (
        f"link {decode.name} -> {prefill.name} at {ip}: {ret}\n---- stderr of {prefill.name} ----\n"
        f"{prefill.stderr_text(3000)}\n---- stderr of {decode.name} ----\n{decode.stderr_text(3000)}")
    return ret


def start_cross_pair(group: WorkerGroup, hosts: netns.Hosts, transport: Optional[str],
                     prefill_init: Optional[Dict[str, Any]] = None,
                     decode_init: Optional[Dict[str, Any]] = None, link: bool = True) -> Pair:
    """Prefill (PROMPT, cluster 1) listening on hosts[0], decode (DECODER, cluster 2) on
    hosts[1], linked (link=True). transport "tcp" / "ucx" is forced on both ends; None forces
    nothing (the handshake chooses)."""
    p_init: Dict[str, Any] = dict(role="PROMPT", cluster_id=PREFILL_ID, listen=True, transport=transport)
    p_init.update(prefill_init or {})
    d_init: Dict[str, Any] = dict(role="DECODER", cluster_id=DECODE_ID, transport=transport)
    d_init.update(decode_init or {})
    prefill = hosts[0].spawn(group, "prefill", **p_init)
    decode = hosts[1].spawn(group, "decode", **d_init)
    if link:
        link_across(decode, prefill, hosts[0].ip)
    return Pair(prefill, decode, transport or "default")
