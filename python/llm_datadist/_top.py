# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist top` and `llm-datadist metrics`: read a running process's metrics from the unix
socket it opens with LLMDD_METRICS_SOCKET (llm_datadist/metrics.py), every read bounded.

top polls the snapshot every --interval seconds and redraws one frame (plain ANSI: home and
clear, only when stdout is a terminal): per link and kind of operation, ops/s and MB/s over the
last interval, the median latency of that interval's operations (from the histogram's buckets),
errors so far. --once samples twice, one interval apart, and prints one frame.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .metrics import KINDS, default_socket_path, exposition, latency_quantile, read_socket

_CLEAR = "\x1b[H\x1b[2J"


def add_top_arguments(p: argparse.ArgumentParser) -> None:
    _add_target(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between frames (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame (two samples an interval apart) and exit")
    p.add_argument("--count", type=int, default=0, metavar="N", help="exit after N frames (default: until Ctrl-C)")


def add_metrics_arguments(p: argparse.ArgumentParser) -> None:
    _add_target(p)
    p.add_argument("--format", choices=("json", "prometheus"), default="json",
                   help="json (the snapshot) or prometheus (text exposition; needs prometheus_client)")


def _add_target(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pid", type=int, help="a process started with LLMDD_METRICS_SOCKET=1 "
                                               "(socket /tmp/llm-datadist-PID.sock)")
    where.add_argument("--socket", metavar="PATH", help="the socket path it was given (LLMDD_METRICS_SOCKET=PATH)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="connect/read timeout (default 2)")


def _path(args: argparse.Namespace) -> str:
    return str(args.socket) if args.socket else default_socket_path(args.pid)


def _read(args: argparse.Namespace) -> Dict[str, Any]:
    return read_socket(_path(args), timeout_s=float(args.timeout))


def cmd_metrics(args: argparse.Namespace) -> int:
    try:
        data = _read(args)
    except (OSError, ValueError) as exc:
        print(f"llm-datadist metrics: {_path(args)}: {exc}", file=sys.stderr)
        return 1
    if args.format == "prometheus":
        try:
            sys.stdout.write(exposition(lambda: data.get("instance")))
        except ImportError as exc:
            print(f"llm-datadist metrics: {exc}", file=sys.stderr)
            return 1
    else:
        print(json.dumps(data, indent=2, sort_keys=True))
    return 0


# ---- one frame ---------------------------------------------------------------------------------

def _fmt_rate(v: Optional[float], scale: float = 1.0) -> str:
    return "-" if v is None else f"{v / scale:.1f}" if v / scale < 1e5 else f"{v / scale:.3g}"


def _fmt_seconds(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f}us"
    if s < 1.0:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def _rows_of(kinds: Dict[str, Any], before: Optional[Dict[str, Any]], dt: Optional[float],
             bounds: List[float]) -> List[Tuple[str, str, str, str, str, str]]:
    rows = []
    for kind in KINDS:
        k = kinds.get(kind)
        if not k or (k["operations"] == 0 and k["errors"] == 0):
            continue
        prev = (before or {}).get(kind)
        ops_s = mb_s = p50 = None
        if prev is not None and dt:
            ops_s = (k["operations"] - prev["operations"]) / dt
            mb_s = (k["bytes"] - prev["bytes"]) / dt
            delta = [a - b for a, b in zip(k["latency_buckets"], prev["latency_buckets"])]
            p50 = latency_quantile(bounds, delta, 0.5)
        else:
            p50 = latency_quantile(bounds, k["latency_buckets"], 0.5)
        codes = ", ".join(f"{n} {c}" for c, n in sorted(k["errors_by_code"].items()))
        rows.append((kind, _fmt_rate(ops_s), _fmt_rate(mb_s, 1e6), _fmt_seconds(p50), str(k["errors"]), codes))
    return rows


def render(now: Dict[str, Any], before: Optional[Dict[str, Any]], interval: Optional[float]) -> str:
    """One frame of top from two socket reads (before: the previous one, or None)."""
    pid = now.get("pid")
    inst = now.get("instance")
    stamp = time.strftime("%H:%M:%S", time.localtime(float(now.get("time", time.time()))))
    if not inst:
        return f"llm-datadist top  pid {pid}  {stamp}\n(no initialized LLMDataDist in this process)\n"
    dt = None
    if before is not None and before.get("instance"):
        dt = float(now["time"]) - float(before["time"]) or None
    prev = before.get("instance") if before else None
    lines = [f"llm-datadist top  pid {pid}  cluster {inst['cluster_id']}  {stamp}"
             f"{'' if dt is None else f'  (rates over {dt:.1f} s)'}"
             f"{'' if inst['enabled'] else '  METRICS OFF (llmdd.Metrics=0)'}"]
    pools = []
    for name, stats in inst["pools"].items():
        if stats:
            pools.append(f"{name} {stats['used_bytes'] / 2**20:.1f}/{stats['capacity'] / 2**20:.1f} MiB")
    lines.append(f"links {len(inst['links'])} (up {inst['links_up']}, broken {inst['links_broken']}, "
                 f"closed {inst['links_closed']})   pools: {', '.join(pools) or 'none'}")
    header = ("PEER", "TRANSPORT", "STATE", "KIND", "OPS/S", "MB/S", "P50", "ERRORS")
    table: List[Tuple[str, ...]] = [header]
    bounds = list(inst["latency_bounds_s"])
    error_lines = []
    for peer in sorted(inst["links"], key=int):
        link = inst["links"][peer]
        prev_kinds = ((prev or {}).get("links") or {}).get(peer, {}).get("kinds") if prev else None
        rows = _rows_of(link["kinds"], prev_kinds, dt, bounds)
        if not rows:
            table.append((str(peer), link["transport"], link["state"], "(idle)", "-", "-", "-", "0"))
        for kind, ops_s, mb_s, p50, errors, codes in rows:
            table.append((str(peer), link["transport"], link["state"], kind, ops_s, mb_s, p50, errors))
            if codes:
                error_lines.append(f"  peer {peer} {kind}: {codes}")
    for kind, ops_s, mb_s, p50, errors, codes in _rows_of(inst["unlinked"], (prev or {}).get("unlinked"), dt, bounds):
        table.append(("-", "-", "no link", kind, ops_s, mb_s, p50, errors))
        if codes:
            error_lines.append(f"  no link {kind}: {codes}")
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        lines.append("  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if error_lines:
        lines.append("errors by code:")
        lines.extend(error_lines)
    return "\n".join(lines) + "\n"


def cmd_top(args: argparse.Namespace) -> int:
    interval = max(0.05, float(args.interval))
    tty = sys.stdout.isatty()
    try:
        before = _read(args)
        if args.once:
            time.sleep(interval)
            sys.stdout.write(render(_read(args), before, interval))
            return 0
        frames = 0
        sys.stdout.write((_CLEAR if tty else "") + render(before, None, None))
        sys.stdout.flush()
        while args.count <= 0 or frames + 1 < args.count:
            time.sleep(interval)
            now = _read(args)
            sys.stdout.write((_CLEAR if tty else "\n") + render(now, before, interval))
            sys.stdout.flush()
            before = now
            frames += 1
        return 0
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"llm-datadist top: {_path(args)}: {exc}"
              f"{'' if os.path.exists(_path(args)) else ' (was the process started with LLMDD_METRICS_SOCKET=1?)'}",
              file=sys.stderr)
        return 1
