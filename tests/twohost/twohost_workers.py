# SPDX-License-Identifier: Apache-2.0
"""Workers on other hosts (network namespaces, llm_datadist._bench.netns): a worker started
inside a namespace, a prefill / decode pair across two, a link by the peer's namespace address,
and whether the ucx cases can run. Imported by conftest.py and the tests (a module of its own:
`from conftest import` resolves to whichever conftest came last)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from llm_datadist._bench import netns
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


def start_on(host: netns.Host, group: WorkerGroup, name: str, env: Optional[Dict[str, str]] = None) -> Worker:
    """A worker process inside `host`'s namespace (closed with the group). UCX picks the
    namespace's own devices: tests/integration's conftest pins UCX_NET_DEVICES=lo for one host,
    which between namespaces would keep UCX off the veth."""
    return group.start(f"{name}@h{host.index}", env, wrap=host.wrap, unset_env=("UCX_NET_DEVICES",))


def spawn_on(host: netns.Host, group: WorkerGroup, name: str, env: Optional[Dict[str, str]] = None,
             **init: Any) -> Worker:
    """Start + ready + init inside `host`'s namespace; listen=True listens on its address."""
    if init.get("listen") is True:
        init["listen"] = host.listen_address()
    w = start_on(host, group, name, env).wait_ready()
    w.init(**init)
    return w


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
    prefill = spawn_on(hosts[0], group, "prefill", **p_init)
    decode = spawn_on(hosts[1], group, "decode", **d_init)
    if link:
        link_across(decode, prefill, hosts[0].ip)
    return Pair(prefill, decode, transport or "default")
