# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist`: demo, explain, doctor, secret, fault, bench."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional


def _cmd_explain(args: argparse.Namespace) -> int:
    from .status import status_info
    try:
        info = status_info(args.code)
    except (ValueError, TypeError) as exc:
        print(f"llm-datadist explain: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    value = info["value"]
    hex_value = f"0x{value & 0xFFFFFFFF:08X}" if value >= 0 else str(value)
    python_name = info["python_name"] or f"(no Python member; reaches Python as LLM_FAILED)"
    print(f"{info['cpp_name']}  {hex_value}  ({value})")
    print(f"  Python name:  LLMStatusCode.{python_name}" if info["python_name"] else f"  Python name:  {python_name}")
    print(f"  Meaning:      {info['message']}")
    print(f"  Recoverable:  {'yes' if info['recoverable'] else 'no'}")
    print(f"  Action:       {info['action']}")
    print(f"  What to do:   {info['suggestion']}")
    print(f"  Serving:      HTTP {info['http_status']} / gRPC {info['grpc_code']}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from . import build_info
    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cuda = info["cuda"]
    print(f"llm_datadist {info['version']}")
    print(f"  native module:  {info['native_module']}")
    print(f"  C++ headers:    {info['include_dir']}")
    print(f"  C++ library:    {info['library_dir']}/libllm_datadist.so")
    if cuda["available"]:
        print(f"  CUDA:           available, driver {cuda['driver_version']}, library {cuda['library_path']}")
        for i, name in enumerate(cuda["device_names"]):
            print(f"    device {i}: {name}, {cuda['device_total_bytes'][i] / 2**30:.1f} GiB")
        if cuda.get("interposed"):
            print("  note: CUDA calls are interposed by a preloaded library (fault injection?)")
        print("  Placement.DEVICE means: CUDA device memory (LLMConfig.device_backend='cpu' to change)")
    else:
        print(f"  CUDA:           not available ({cuda['reason']})")
        print("  Placement.DEVICE means: the CPU device (host memory standing in for a GPU)")
    ucx = info["ucx"]
    if ucx["available"]:
        print(f"  UCX:            {ucx['version']}, library {ucx['library']}")
        print(f"    transports:   {', '.join(ucx['transports']) or '(none under this UCX_* environment)'}")
    else:
        print(f"  UCX:            not available ({ucx['reason']})")
    return 0


def new_link_secret() -> str:
    """A fresh link secret: 32 random bytes (256 bits) from the OS, URL-safe base64 (43 chars), so
    it survives a shell, an environment variable and a JSON config unquoted."""
    import secrets
    return secrets.token_urlsafe(32)


def _cmd_secret(args: argparse.Namespace) -> int:
    print(new_link_secret())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo
    return run_demo(args)


def _cmd_serve_demo(args: argparse.Namespace) -> int:
    from ._serve_demo import run_serve_demo
    return run_serve_demo(args)


def _cmd_fault(args: argparse.Namespace) -> int:
    import subprocess

    from . import fault_injection as fi
    try:
        if args.shim_path:
            print(fi.shim_path())
            return 0
        if args.list:
            rows = fi.xid_table()
            if args.json:
                print(json.dumps([vars(r) for r in rows], indent=2))
                return 0
            print(f"{'XID':>4} {'code':>5}  {'driver error':<32} {'runtime error':<29} {'init':>4}  "
                  f"{'catalog action':<20} meaning")
            for r in rows:
                init = str(r.init_code) if r.init_code else "-"
                print(f"{r.xid:>4} {r.code:>5}  {r.error:<32} {r.runtime_error:<29} {init:>4}  "
                      f"{r.catalog_action:<20} {r.description}")
            print("init: what cuInit/cuDeviceGetCount/cudaGetDeviceCount return once the fault fired "
                  "(-: they keep working). Any other CUDA error: --code N.")
            return 0
        command = list(args.command)
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            print("llm-datadist fault: nothing to run (usage: llm-datadist fault --xid 48 -- CMD ...)",
                  file=sys.stderr)
            return 2
        config = fi.FaultConfig(
            xid=args.xid, code=args.code,
            enabled=not args.disarmed and (args.xid is not None or args.code is not None),
            sticky=not args.non_sticky, transient=args.transient, repeat=args.repeat,
            after_calls=args.after_calls, after_seconds=args.after_seconds, prob=args.prob,
            seed=args.seed, device=args.device, functions=args.functions, delay_ms=args.delay_ms,
            control_file=args.control_file, poll_ms=args.poll_ms, log_json=args.log_json,
            quiet=args.quiet, process=args.process)
        env = fi.env_for(config)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"llm-datadist fault: {exc}", file=sys.stderr)
        return 2
    try:
        return subprocess.run(command, env=env).returncode
    except FileNotFoundError:
        print(f"llm-datadist fault: {command[0]}: command not found", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


def _cmd_bench(args: argparse.Namespace) -> int:
    from ._bench.suite import run
    return run(args, getattr(args, "bench_argv", None))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-datadist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a prefill and a decode process: link, pull caches and blocks, verify "
                                       "every byte, report GB/s and transport")
    from ._demo import add_arguments as _demo_arguments
    _demo_arguments(demo)
    demo.set_defaults(func=_cmd_demo)
    serve_demo = sub.add_parser("serve-demo", help="disaggregated serving of a small transformer: P prefill + D "
                                                   "decode workers, tokens checked against one process, TTFT split")
    from ._serve_demo import add_arguments as _serve_demo_arguments
    _serve_demo_arguments(serve_demo)
    serve_demo.set_defaults(func=_cmd_serve_demo)
    explain = sub.add_parser("explain", help="what a status code means and what to do about it")
    explain.add_argument("code", help="0x5010B002, 1343270914 or LLM_KV_CACHE_NOT_EXIST")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=_cmd_explain)
    doctor = sub.add_parser("doctor", help="what this build found: native library, CUDA, devices")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=_cmd_doctor)
    secret = sub.add_parser(
        "secret", help="print a new random link secret (256 bits) for llmdd.LinkSecret / LLMDD_LINK_SECRET",
        description="Prints one new high-entropy link secret and nothing else. Give the same secret to "
                    "every process that links (option llmdd.LinkSecret or env LLMDD_LINK_SECRET), out of band.")
    secret.set_defaults(func=_cmd_secret)
    fault = sub.add_parser(
        "fault", help="run a command with its CUDA calls failing like a GPU with a given XID",
        description="Runs COMMAND under the CUDA fault-injection shim (LD_PRELOAD). Example: "
                    "llm-datadist fault --xid 48 --after-calls 100 -- python decode.py")
    what = fault.add_mutually_exclusive_group()
    what.add_argument("--xid", type=int, help="simulate this XID (see --list)")
    what.add_argument("--code", type=int, help="inject this CUDA error code instead")
    fault.add_argument("--after-calls", type=int, default=0, metavar="N", help="the first N matching calls pass")
    fault.add_argument("--after-seconds", type=float, default=0.0, metavar="T", help="no failure before T s")
    fault.add_argument("--transient", type=int, default=0, metavar="K", help="K failures, then recovery")
    fault.add_argument("--repeat", action="store_true", help="a transient fault re-arms after recovering")
    fault.add_argument("--non-sticky", action="store_true",
                       help="only matching calls fail (default: latched, every call fails once fired)")
    fault.add_argument("--prob", type=float, default=1.0, metavar="P", help="fire with probability P per call")
    fault.add_argument("--seed", type=int, default=None, help="seed for --prob")
    fault.add_argument("--device", type=int, default=None, metavar="D", help="only CUDA device ordinal D")
    fault.add_argument("--functions", default=None, metavar="GLOBS",
                       help="comma-separated patterns of the calls that count, e.g. 'cuMemcpy*'")
    fault.add_argument("--delay-ms", type=int, default=0, help="the firing call blocks this long first")
    fault.add_argument("--control-file", default=None, metavar="F", help="watch F for live changes")
    fault.add_argument("--poll-ms", type=int, default=None, help="how often F is checked (default 100)")
    fault.add_argument("--log-json", default=None, metavar="F", help="append JSON lines to F")
    fault.add_argument("--process", default=None, metavar="GLOBS",
                       help="only processes with a matching name stay under the shim")
    fault.add_argument("--quiet", action="store_true", help="no stderr lines from the shim")
    fault.add_argument("--disarmed", action="store_true",
                       help="start disarmed (passthrough); arm through --control-file")
    fault.add_argument("--list", action="store_true", help="print the XID table and exit")
    fault.add_argument("--json", action="store_true", help="with --list: JSON")
    fault.add_argument("--shim-path", action="store_true", help="print the shim's path and exit")
    fault.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    fault.set_defaults(func=_cmd_fault)
    from ._top import add_metrics_arguments, add_top_arguments, cmd_metrics, cmd_top
    top = sub.add_parser("top", help="live view of a running process's links and rates (it must have been "
                                     "started with LLMDD_METRICS_SOCKET=1)")
    add_top_arguments(top)
    top.set_defaults(func=cmd_top)
    metrics = sub.add_parser("metrics", help="print a running process's metrics snapshot (JSON or Prometheus "
                                             "text) from its LLMDD_METRICS_SOCKET")
    add_metrics_arguments(metrics)
    metrics.set_defaults(func=cmd_metrics)
    bench = sub.add_parser("bench", help="transfer benchmarks: every case, the machine's ceilings and the peers "
                                         "(NIXL, Mooncake) when installed; table, JSON, PNG plot")
    from ._bench.suite import add_arguments as _bench_arguments
    _bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench, bench_argv=None if argv is None else list(argv)[1:])
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
