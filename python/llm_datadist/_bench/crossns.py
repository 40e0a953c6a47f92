# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist bench --crossns`: the reference cases (a)-(d) and the Llama-8B 2k-token request
between two hosts on this machine, two network namespaces joined by a veth (netns.py), in one
run: ours over tcp (and ucx where the core has a UCX transport that found its library), NIXL
(UCX) and Mooncake (tcp) when `--peer-python` imports them.

How each side runs (root; skipped, saying why, elsewhere):
  ours      a child in the decode namespace runs transfer.Bench's pass with its prefill child
            in the prefill namespace (`ip netns exec`), linked by the prefill's veth address,
            transport forced with llmdd.Transport; every byte checked; rows come back as JSON
            lines.
  peers     peers.py's initiator in the decode namespace; its target process is started in the
            prefill namespace (`ip netns exec`, through multiprocessing's executable). NIXL: UCX with UCX_NET_DEVICES = each
            side's veth, once with UCX's own transport choice ("nixl") and once with UCX_TLS=tcp
            ("nixl_tcp"); Mooncake: tcp, each side on its own veth address.
Each system's bytes in over the decode's veth are counted (its rx_bytes before and after), so
the record shows which ones crossed the veth and which found a way around it (UCX may take
shared memory or CMA between two namespaces of one machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, fields
from typing import Any, Dict, List, Optional, Sequence

from . import netns

CASES = ("a", "b", "c", "d", "llama8b_2k", "llama8b_256t")   # the last one: --quick's model case
OURS = ("tcp", "ucx")


def _cases(args: argparse.Namespace) -> List[Any]:
    from .suite import build_cases
    cases = [c for c in build_cases(args.quick, ["reference", "model"]) if c.name in CASES]
    if args.iters is not None or args.warmup is not None:
        for c in cases:
            c.iters = args.iters if args.iters is not None else c.iters
            c.warmup = args.warmup if args.warmup is not None else c.warmup
            c.reference = False
    return cases


def ucx_unavailable() -> Optional[str]:
    from llm_datadist import _core
    if not hasattr(_core, "ucx_info"):
        return "this build of the core has no UCX transport"
    info = _core.ucx_info()
    return None if info.get("available") else f"UCX not available: {info.get('reason') or info}"


def _rx_bytes(host: netns.Host) -> int:
    return int(host.run("cat", f"/sys/class/net/{host.veth}/statistics/rx_bytes").stdout)


def _request_bytes(cases: Sequence[Any]) -> int:
    return sum(c.nbytes * (c.warmup + c.iters) for c in cases)


# ---------------------------------------------------------------------------------------------
# the child: our pass, in the decode namespace

def child_main(spec: Dict[str, Any]) -> int:
    """Runs in the decode namespace: one transfer.Bench pass against a prefill child started
    with spec["prefill_wrap"] (the other namespace) at spec["prefill_ip"]; JSON lines out."""
    from . import transfer
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    cases = [transfer.Case(**c) for c in spec["cases"]]
    bargs = argparse.Namespace(**spec["bargs"])
    bench = transfer.Bench(bargs, cases)
    bench.prefill_ip, bench.prefill_wrap = spec["prefill_ip"], spec["prefill_wrap"]
    try:
        bench.run_pass(spec["transport"], do_cma=False)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a note
        bench.notes.append(f"pass {spec['transport']} stopped: {type(exc).__name__}: {exc}")
        bench.errors += 1
    finally:
        bench.helper.close()
    for r in bench.rows:
        out.write(json.dumps({"kind": "row", "row": asdict(r)}) + "\n")
    out.write(json.dumps({"kind": "done", "links": bench.links, "notes": bench.notes, "errors": bench.errors}) + "\n")
    out.flush()
    return 0


def _run_ours(args: argparse.Namespace, cases: List[Any], hosts: netns.Hosts, transport: str,
              timeout_s: float) -> Dict[str, Any]:
    from .transfer import Row
    a, b = hosts[0], hosts[1]
    bargs = dict(transport=[transport], placement=["host"], op="pull_blocks", cases="", iters=None, warmup=None,
                 check=args.check, ceilings=[], threads=args.threads, pool_mib=0, seed=args.seed,
                 slot_seed=args.slot_seed, device_backend=args.device_backend,
                 sync_kv_timeout_ms=args.sync_kv_timeout_ms, link_timeout_ms=args.link_timeout_ms, out=None)
    spec = {"cases": [asdict(c) for c in cases], "bargs": bargs, "transport": transport,
            "prefill_ip": a.ip, "prefill_wrap": a.wrap}
    env = dict(os.environ)
    env.pop("LLMDD_TRANSPORT", None)
    # each side's UCX picks its namespace's devices (a UCX_NET_DEVICES=lo meant for one host, or a
    # device of the other namespace, would keep it off the veth)
    env.pop("UCX_NET_DEVICES", None)
    res: Dict[str, Any] = {"rows": [], "links": [], "notes": [], "errors": 0}
    with tempfile.TemporaryFile() as err:
        rx0 = _rx_bytes(b)
        t0 = time.time()
        proc = subprocess.Popen([*b.wrap, sys.executable, "-m", "llm_datadist._bench.crossns", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            res["notes"].append(f"ours/{transport}: stopped after {timeout_s:.0f} s")
            res["errors"] += 1
        res["elapsed_s"] = round(time.time() - t0, 2)
        res["veth_rx_bytes"] = _rx_bytes(b) - rx0
        names = {f.name for f in fields(Row)}
        for line in out.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "row":
                res["rows"].append(Row(**{k: v for k, v in rec["row"].items() if k in names}))
            elif rec.get("kind") == "done":
                res["links"], res["errors"] = rec["links"], res["errors"] + rec["errors"]
                res["notes"] += [f"ours/{transport}: {n}" for n in rec["notes"]]
        if not any(True for _ in res["rows"]) or proc.returncode not in (0, None):
            err.seek(0)
            tail = err.read()[-1500:].decode("utf-8", "replace")
            res["notes"].append(f"ours/{transport}: child exited {proc.returncode}; stderr tail: {tail}")
            res["errors"] += 1
    return res


# ---------------------------------------------------------------------------------------------
# the parent

def run(args: argparse.Namespace, progress: Any) -> Dict[str, Any]:
    """Our rows, the peers' rows and the veth counters, as the record's extras["crossns"]."""
    from .peers import PEERS, available, peer_env
    from .suite import run_peers
    from .transfer import Bench, Row
    cases = _cases(args)
    why = netns.unavailable()
    res: Dict[str, Any] = {"cases": [asdict(c) | {"bytes": c.nbytes} for c in cases], "rows": [], "systems": {},
                           "notes": [], "errors": 0}
    if why:
        res["skipped"] = why
        return res
    ours = [t for t in OURS if t == "tcp" or ucx_unavailable() is None]
    if "ucx" not in ours:
        res["systems"]["llm_datadist/ucx"] = {"not_run": ucx_unavailable()}
    if args.peers == "none":
        peers: List[str] = []
        for p in PEERS:
            res["systems"][p] = {"not_run": "--peers none"}
    else:
        avail = available(args.peer_python)
        wanted = list(PEERS) if args.peers == "auto" else [p for p in args.peers.split(",") if p]
        peers = [p for p in wanted if p in avail and not avail[p]]
        for p in PEERS:
            if p not in peers:
                res["systems"][p] = {"not_run": avail.get(p) or f"not in --peers {args.peers}"}
    per_case_s = 600.0 if not args.quick else 120.0
    with netns.Hosts(2) as hosts:
        a, b = hosts[0], hosts[1]
        res["topology"] = {"prefill": {"netns": a.netns, "ip": a.ip, "veth": a.veth},
                           "decode": {"netns": b.netns, "ip": b.ip, "veth": b.veth}, "prefix": 30,
                           "how": "one veth pair, no default route; names carry this process's pid"}
        for transport in ours:
            progress.note(f"crossns: ours/{transport}")
            out = _run_ours(args, cases, hosts, transport, per_case_s * len(cases))
            res["rows"] += [r.to_json() | {"system": "llm_datadist", "group": "crossns"} for r in out["rows"]]
            res["notes"] += out["notes"]
            res["errors"] += out["errors"]
            link = (out["links"] or [{}])[0]
            res["systems"][f"llm_datadist/{transport}"] = {
                "link": {k: link.get(k) for k in ("requested", "transport", "reason", "link_ms", "error")},
                "elapsed_s": out.get("elapsed_s"), "veth_rx_bytes": out.get("veth_rx_bytes"),
                "requested_bytes": _request_bytes(cases)}
            progress.step(f"crossns ours/{transport} done")
        if peers:
            # a Bench for the peers' bookkeeping (pattern, pool, rows); no pass of ours runs in it
            bargs = argparse.Namespace(transport=[], placement=["host"], op="pull_blocks", cases="", iters=None,
                                       warmup=None, check=args.check, ceilings=[], threads=args.threads, pool_mib=0,
                                       seed=args.seed, slot_seed=args.slot_seed, device_backend=args.device_backend,
                                       sync_kv_timeout_ms=args.sync_kv_timeout_ms,
                                       link_timeout_ms=args.link_timeout_ms, out=None)
            pb = Bench(bargs, cases)
            pb.helper.close()
            pb._peer_transport, pb.peer_errors = {}, 0
            max_descs = max(c.nblocks * c.tensors for c in cases)
            for peer in peers:
                progress.note(f"crossns: {peer}")
                target_env = {k: v for k, v in peer_env(peer, max_descs).items()}
                # each side's UCX on its own veth (peer_env's UCX_NET_DEVICES=lo is for one host)
                target_env["UCX_NET_DEVICES"] = a.veth
                initiator_env = {"UCX_NET_DEVICES": b.veth}
                rx0 = _rx_bytes(b)
                t0 = time.time()
                rows, extras = run_peers(args, pb, [peer], progress, 0, wrap=b.wrap,
                                         spec_extra={"target": {"wrap": a.wrap, "ip": a.ip, "env": target_env},
                                                     "initiator_ip": b.ip},
                                         env_extra=initiator_env)
                res["rows"] += [r.to_json() | {"group": "crossns"} for r in rows]
                ex = extras.get(peer, {})
                res["systems"][peer] = {"env_initiator": dict(ex.get("env", {}), **initiator_env),
                                        "env_target": target_env, "backend": ex.get("backend"),
                                        "error": ex.get("error"), "elapsed_s": round(time.time() - t0, 2),
                                        "veth_rx_bytes": _rx_bytes(b) - rx0, "requested_bytes": _request_bytes(cases)}
            res["notes"] += [f"peers: {n}" for n in pb.notes if n.startswith("peer ")]
    for name, s in res["systems"].items():
        if s.get("veth_rx_bytes") is not None and s.get("requested_bytes"):
            s["crossed_veth"] = s["veth_rx_bytes"] >= 0.9 * s["requested_bytes"]
    res["ratios"] = ratios(res)
    return res


def _gbps(res: Dict[str, Any], system: str, transport: str, case: str) -> Optional[float]:
    for r in res["rows"]:
        if r["system"] == system and r["case"] == case and (not transport or r.get("transport") == transport):
            return None if r.get("error") or not r.get("GBps") else r["GBps"]
    return None


def _median_us(res: Dict[str, Any], system: str, transport: str, case: str) -> Optional[float]:
    for r in res["rows"]:
        if r["system"] == system and r["case"] == case and (not transport or r.get("transport") == transport):
            return None if r.get("error") else r.get("median_us")
    return None


def ratios(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Issue 12's comparisons across the veth: ours/ucx and ours/tcp against NIXL (UCX, both
    settings) and Mooncake tcp, GB/s over GB/s (for (d): the peer's median over ours)."""
    out = []
    for ours_t in OURS:
        for peer in ("nixl", "nixl_tcp", "mooncake_tcp"):
            for c in res["cases"]:
                o, p = _gbps(res, "llm_datadist", ours_t, c["name"]), _gbps(res, peer, "", c["name"])
                if o is None or p is None:
                    continue
                mo, mp = _median_us(res, "llm_datadist", ours_t, c["name"]), _median_us(res, peer, "", c["name"])
                out.append({"case": c["name"], "ours": f"llm_datadist/{ours_t}", "peer": peer, "ours_GBps": o,
                            "peer_GBps": p, "ours_median_us": mo, "peer_median_us": mp,
                            "speedup": round(mp / mo, 3) if mo and mp else None,
                            "peer_crossed_veth": res["systems"].get(peer, {}).get("crossed_veth")})
    return out


def table(res: Dict[str, Any]) -> str:
    from .suite import SYSTEM_LABEL
    L = ["== across network namespaces (two hosts on this machine, one veth) =="]
    if res.get("skipped"):
        return "\n".join(L + [f"  not run: {res['skipped']}"])
    topo = res.get("topology", {})
    if topo:
        L.append(f"  prefill {topo['prefill']['netns']} {topo['prefill']['ip']} <-> decode "
                 f"{topo['decode']['netns']} {topo['decode']['ip']} (/{topo['prefix']}, no default route)")
    hdr = f"{'case':<44} {'system':<24} {'GB/s':>8} {'median us':>10} {'p99 us':>10} {'check':>5}"
    L += [hdr, "-" * len(hdr)]
    labels = {c["name"]: c.get("label") or c["name"] for c in res["cases"]}
    order = {c["name"]: i for i, c in enumerate(res["cases"])}
    sysorder = {"llm_datadist": 0, "nixl": 1, "nixl_tcp": 2, "mooncake_tcp": 3}
    for r in sorted(res["rows"], key=lambda r: (order.get(r["case"], 99), sysorder.get(r["system"], 9),
                                                r.get("transport", ""))):
        system = (f"llm_datadist/{r['transport']}" if r["system"] == "llm_datadist"
                  else SYSTEM_LABEL.get(r["system"], r["system"]))
        name = labels.get(r["case"], r["case"])[:44]
        if r.get("error"):
            L.append(f"{name:<44} {system:<24} ERROR {r['error'][:70]}")
            continue
        check = {True: "ok", False: "FAIL", None: "-"}[r.get("verified")]
        L.append(f"{name:<44} {system:<24} {r['GBps']:>8.3f} {r['median_us']:>10.1f} {r['p99_us']:>10.1f} {check:>5}")
    if res.get("ratios"):
        L += ["", "ours / peer across the veth (GB/s ratio; (d): speed-up = peer median / ours):"]
        for x in res["ratios"]:
            ratio = x["ours_GBps"] / x["peer_GBps"] if x["peer_GBps"] else float("nan")
            L.append(f"  {x['case']:<12} {x['ours']:<18} {x['ours_GBps']:>8.3f}  {SYSTEM_LABEL[x['peer']]:<16} "
                     f"{x['peer_GBps']:>8.3f}  {ratio:>6.2f}x GB/s, speed-up {x['speedup']}"
                     + ("" if x["peer_crossed_veth"] is not False else
                        "  (the peer's bytes did not cross the veth: not a cross-host number)"))
    L += ["", "systems:"]
    for name, s in res["systems"].items():
        if "not_run" in s:
            L.append(f"  {name}: not run ({s['not_run']})")
            continue
        crossed = s.get("crossed_veth")
        where = ("crossed the veth" if crossed else "did NOT cross the veth (another path)") if crossed is not None \
            else ""
        extra = f"; link {s['link'].get('transport')} ({s['link'].get('reason')})" if s.get("link") else ""
        extra += f"; env {s.get('env_initiator')}" if s.get("env_initiator") else ""
        L.append(f"  {name}: {s.get('veth_rx_bytes', 0) / 1e6:.0f} MB in over the decode's veth for "
                 f"{s.get('requested_bytes', 0) / 1e6:.0f} MB requested: {where}{extra}"
                 + (f"; ERROR {s['error']}" if s.get("error") else ""))
    if res.get("notes"):
        L += ["", "notes:"] + [f"  - {n}" for n in res["notes"]]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(child_main(json.loads(sys.argv[1])))
