# SPDX-License-Identifier: Apache-2.0
"""NIXL and Mooncake on the suite's cases, for rows side by side with ours in one run.

Drives the peers as ../shared/peer_bench does (reimplemented here, so an installed package
needs nothing outside itself): a "prefill" target process registers a pool filled with the same
seeded pattern as ours; this "decode" initiator registers a destination pool of the same size,
gets the target's metadata over a multiprocessing Pipe and READs the case's blocks (the same
random distinct slots as ours), every byte verified after each case.

  nixl          nixl-cu13 (or nixl-cu12 / nixl), UCX backend, UCX's own transport choice
                (on one host: CMA `process_vm_readv`), `make_prepped_xfer` + `transfer` +
                poll + `release` per request (the prepped descriptor lists cover the pool)
  nixl_tcp      the same with UCX_TLS=tcp, UCX_NET_DEVICES=lo
  mooncake_tcp  mooncake-transfer-engine(-non-cuda), protocol tcp, P2PHANDSHAKE (no etcd),
                `batch_transfer_sync_read` per request; MC_TCP_MAX_QUEUED_TRANSFERS_PER_PEER
                raised to the largest request (the default cap of ~2048 descriptors fails (c))

Layout: one pool buffer per side; tensor t of a case lives at t * tensor_bytes, so block
(t, slot) is at t * tensor_bytes + slot * block, as in our caches (whose tensor t holds
pattern[t * tensor_bytes:...]).  Also measured: registering the pool, registering 4096
separate 16 KiB regions one call each, and NIXL's metadata blob size (what its users exchange
per link).

Across namespaces (`llm-datadist bench --crossns`, crossns.py): the initiator runs in the
decode's network namespace, the target is started in the prefill's (spec "target": its argv
prefix, address and environment), each side on its own address.

Run as `python -m llm_datadist._bench.peers SPEC_JSON`: one JSON line per result on stdout,
progress on stderr.  The process ends with os._exit(0): NIXL next to Debian's libibverbs
(which Mooncake needs) crashes in a library destructor at exit (peer_baseline.md).
"""
from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

PEERS = ("nixl", "nixl_tcp", "mooncake_tcp")
# peer_baseline.md's setting. With the cap raised to 131072 (the 32k-token request's descriptors),
# every request from case (c) on failed with -1 here (first full run, 2026-11-22); a failed batch
# leaves the engine failing every later one, so larger requests are not sent (an ERROR row says so).
MOONCAKE_QUEUE_CAP = 16384
HOST = "127.0.0.1"


def _nixl_module() -> Optional[str]:
    for name in ("nixl_cu13", "nixl_cu12", "nixl"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            pass
    return None


def available(python: Optional[str] = None) -> Dict[str, str]:
    """{peer: "" if importable by `python` (default: this interpreter) else why not}."""
    # (abspath, not realpath: a venv's python is a symlink to the base interpreter, with other packages)
    if python and os.path.abspath(python) != os.path.abspath(sys.executable):
        import subprocess
        code = "import json; from llm_datadist._bench.peers import available; print(json.dumps(available()))"
        try:
            out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
            return json.loads(out.stdout.strip().splitlines()[-1])
        except Exception as exc:  # noqa: BLE001 - any failure means: not available
            return {p: f"{python} cannot run the peer probe: {exc}" for p in PEERS}
    nixl = _nixl_module()
    try:
        mooncake = importlib.util.find_spec("mooncake") is not None
    except (ImportError, ValueError):
        mooncake = False
    why_nixl = "" if nixl else "NIXL is not importable (pip install nixl-cu13; it pulls a CUDA torch)"
    return {"nixl": why_nixl, "nixl_tcp": why_nixl,
            "mooncake_tcp": "" if mooncake else "Mooncake is not importable (pip install "
                                                "mooncake-transfer-engine-non-cuda; apt-get install libibverbs1)"}


def peer_env(peer: str, max_descs: int) -> Dict[str, str]:
    """The environment a peer's processes run with (recorded in the JSON)."""
    env = {}
    if peer == "nixl_tcp":
        env.update(UCX_TLS="tcp", UCX_NET_DEVICES="lo")
    if peer == "mooncake_tcp":
        env["MC_TCP_MAX_QUEUED_TRANSFERS_PER_PEER"] = str(MOONCAKE_QUEUE_CAP)
    return env


# ---------------------------------------------------------------------------------------------
# the target ("prefill") process

def _nixl():
    import importlib
    return importlib.import_module(_nixl_module() or "nixl")


def _mooncake_engine(host: str = HOST):
    from mooncake.engine import TransferEngine
    te = TransferEngine()
    rc = te.initialize(host, "P2PHANDSHAKE", "tcp", "")
    if rc != 0:
        raise RuntimeError(f"TransferEngine.initialize rc={rc}")
    return te


def _serve(conn: Any, src: np.ndarray, pattern: np.ndarray, poll: Any) -> None:
    """The target's loop: ("fill", case) lays the case's tensors out in the pool; "stop" ends."""
    from .transfer import Case
    while True:
        if conn.poll(0.05):
            msg = conn.recv()
            if msg == "stop":
                return
            if isinstance(msg, tuple) and msg[0] == "fill":
                case = Case(**msg[1])
                T = case.tensor_bytes
                for t in range(case.tensors):
                    o = case.pattern_offset(t)
                    src[t * T:(t + 1) * T] = pattern[o:o + T]
                conn.send("filled")
        if poll is not None:
            poll()


def target_main(conn: Any, peer: str, pool_bytes: int, pattern_bytes: int, seed: int,
                where: Optional[Dict[str, Any]] = None) -> None:
    """where (--crossns): the target's host, {"wrap": argv prefix it was started with, "ip":
    its address, "env": {...}}."""
    from .transfer import make_pattern
    where = where or {}
    os.environ.update(where.get("env") or {})
    pattern = make_pattern(pattern_bytes, seed)
    src = np.zeros(pool_bytes, dtype=np.uint8)
    if peer.startswith("nixl"):
        nx = _nixl()
        agent = nx.nixl_agent("prefill", nx.nixl_agent_config(backends=[]))
        agent.create_backend("UCX", {})
        agent.register_memory([(src.ctypes.data, src.nbytes, 0, "")], "DRAM")
        conn.send({"md": agent.get_agent_metadata(), "addr": src.ctypes.data, "pid": os.getpid()})
        _serve(conn, src, pattern, agent.get_new_notifs)
    else:
        host = where.get("ip", HOST)
        te = _mooncake_engine(host)
        rc = te.register_memory(src.ctypes.data, src.nbytes)
        if rc != 0:
            raise RuntimeError(f"register_memory rc={rc}")
        conn.send({"session": f"{host}:{te.get_rpc_port()}", "addr": src.ctypes.data, "pid": os.getpid()})
        _serve(conn, src, pattern, None)
    conn.send("bye")
    sys.stdout.flush()
    os._exit(0)


# ---------------------------------------------------------------------------------------------
# the initiator ("decode")

class NixlInitiator:
    def __init__(self, remote: Dict[str, Any], dst: np.ndarray) -> None:
        nx = _nixl()
        self.agent = nx.nixl_agent("decode", nx.nixl_agent_config(backends=[]))
        self.agent.create_backend("UCX", {})
        self.dst = dst
        t0 = time.perf_counter()
        self.agent.register_memory([(dst.ctypes.data, dst.nbytes, 0, "")], "DRAM")
        self.register_pool_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        self.remote_name = self.agent.add_remote_agent(remote["md"])
        self.link_ms = (time.perf_counter() - t0) * 1e3
        self.metadata_bytes = len(remote["md"])
        self.raddr = remote["addr"]
        self._prepped: Dict[int, Tuple[Any, Any]] = {}
        self.backend = None

    def _dlists(self, block: int) -> Tuple[Any, Any]:
        if block not in self._prepped:
            n = self.dst.nbytes // block
            loc = np.zeros((n, 3), dtype=np.uint64)
            loc[:, 0] = self.dst.ctypes.data + np.arange(n, dtype=np.uint64) * block
            loc[:, 1] = block
            rem = loc.copy()
            rem[:, 0] = self.raddr + np.arange(n, dtype=np.uint64) * block
            self._prepped[block] = (self.agent.prep_xfer_dlist("NIXL_INIT_AGENT", loc, "DRAM"),
                                    self.agent.prep_xfer_dlist(self.remote_name, rem, "DRAM"))
        return self._prepped[block]

    def request(self, case: Any, remote_idx: np.ndarray, local_idx: np.ndarray):
        lh, rh = self._dlists(case.block)
        li, ri = local_idx.astype(np.int32), remote_idx.astype(np.int32)

        def run() -> None:
            h = self.agent.make_prepped_xfer("READ", lh, li, rh, ri)
            st = self.agent.transfer(h)
            t0 = time.perf_counter()
            while st == "PROC":
                st = self.agent.check_xfer_state(h)
                if time.perf_counter() - t0 > 60:
                    raise TimeoutError("NIXL transfer still PROC after 60 s")
            if st != "DONE":
                raise RuntimeError(f"NIXL transfer state {st}")
            if self.backend is None:
                self.backend = self.agent.query_xfer_backend(h)
            h.release()
        return run

    def register_regions(self, regions: List[np.ndarray]) -> float:
        t0 = time.perf_counter()
        for r in regions:
            self.agent.register_memory([(r.ctypes.data, r.nbytes, 0, "")], "DRAM")
        return (time.perf_counter() - t0) * 1e3


class MooncakeInitiator:
    def __init__(self, remote: Dict[str, Any], dst: np.ndarray, host: str = HOST) -> None:
        self.te = _mooncake_engine(host)
        self.dst = dst
        t0 = time.perf_counter()
        rc = self.te.register_memory(dst.ctypes.data, dst.nbytes)
        self.register_pool_ms = (time.perf_counter() - t0) * 1e3
        if rc != 0:
            raise RuntimeError(f"register_memory rc={rc}")
        self.session, self.raddr = remote["session"], remote["addr"]
        self.link_ms = None          # connections open on the first transfer
        self.metadata_bytes = None
        self.backend = "tcp"

    def request(self, case: Any, remote_idx: np.ndarray, local_idx: np.ndarray):
        laddrs = [int(self.dst.ctypes.data + i * case.block) for i in local_idx]
        raddrs = [int(self.raddr + i * case.block) for i in remote_idx]
        lens = [case.block] * len(laddrs)

        def run() -> None:
            rc = self.te.batch_transfer_sync_read(self.session, laddrs, raddrs, lens)
            if rc != 0:
                raise RuntimeError(f"batch_transfer_sync_read rc={rc}")
        return run

    def register_regions(self, regions: List[np.ndarray]) -> float:
        t0 = time.perf_counter()
        for r in regions:
            if self.te.register_memory(r.ctypes.data, r.nbytes) != 0:
                raise RuntimeError("register_memory failed")
        return (time.perf_counter() - t0) * 1e3


def run_peer(spec: Dict[str, Any]) -> None:
    from .transfer import Case, make_pattern, slots_for, verify_case
    peer, pool_bytes, seed = spec["peer"], spec["pool_bytes"], spec["seed"]

    def emit(**rec: Any) -> None:
        print(json.dumps(rec), flush=True)

    ctx = mp.get_context("spawn")
    wrap = (spec.get("target") or {}).get("wrap")
    if wrap:
        # --crossns: the target starts inside the other namespace (`ip netns exec` execs in place,
        # so the inherited pipe stays the target's) through a one-line launcher
        launcher = os.path.join(tempfile.mkdtemp(prefix="llmdd-peer-"), "python")
        with open(launcher, "w") as f:
            f.write("#!/bin/sh\nexec " + " ".join(shlex.quote(x) for x in [*wrap, sys.executable]) + ' "$@"\n')
        os.chmod(launcher, 0o755)
        ctx.set_executable(launcher)
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target_main, args=(child, peer, pool_bytes, spec["pattern_bytes"], seed,
                                                 spec.get("target")), daemon=True)
    proc.start()
    try:
        t0 = time.time()
        while not parent.poll(0.2):
            if not proc.is_alive():
                raise RuntimeError(f"{peer} target exited with code {proc.exitcode} before sending metadata")
            if time.time() - t0 > 120:
                raise TimeoutError(f"{peer} target sent no metadata in 120 s")
        remote = parent.recv()
        dst = np.zeros(pool_bytes, dtype=np.uint8)
        ini = (NixlInitiator(remote, dst) if peer.startswith("nixl") else
               MooncakeInitiator(remote, dst, spec.get("initiator_ip", HOST)))
        pattern = make_pattern(spec["pattern_bytes"], seed)
        for cd in spec["cases"]:
            case = Case(**cd)
            print(f"{peer}: case {case.name}", file=sys.stderr, flush=True)
            parent.send(("fill", cd))
            if not parent.poll(600) or parent.recv() != "filled":
                raise RuntimeError(f"{peer} target did not lay out case {case.name}")
            remote_s, local_s = slots_for(case, None, spec["slot_seed"])
            gidx = lambda s: np.concatenate([t * case.nslots + s for t in range(case.tensors)])  # noqa: E731
            rec: Dict[str, Any] = {"kind": "case", "case": case.name, "times_us": [], "verified": None,
                                   "verify_detail": "", "error": ""}
            dst[:] = 0
            try:
                if peer == "mooncake_tcp" and case.nblocks * case.tensors > MOONCAKE_QUEUE_CAP:
                    raise RuntimeError(f"not run: {case.nblocks * case.tensors} descriptors in one request exceed "
                                       f"Mooncake's per-peer queue cap MC_TCP_MAX_QUEUED_TRANSFERS_PER_PEER="
                                       f"{MOONCAKE_QUEUE_CAP}, and a failed batch breaks the engine for the rest")
                run = ini.request(case, gidx(remote_s), gidx(local_s))
                times = []
                for it in range(case.warmup + case.iters):
                    t1 = time.perf_counter()
                    run()
                    if it >= case.warmup:
                        times.append((time.perf_counter() - t1) * 1e6)
                rec["times_us"] = times
                if spec.get("check", True):
                    T = case.tensor_bytes
                    rec["verified"], rec["verify_detail"] = verify_case(
                        case, pattern, [dst[t * T:(t + 1) * T] for t in range(case.tensors)], remote_s, local_s)
            except Exception as exc:  # noqa: BLE001 - one case failing is a row, not the end
                rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
            rec["backend"] = str(ini.backend)
            emit(**rec)
        regions = [np.zeros(spec.get("region_bytes", 16 << 10), dtype=np.uint8) for _ in range(spec.get("regions", 0))]
        reg_ms = ini.register_regions(regions) if regions else None
        emit(kind="extras", register_pool_ms=ini.register_pool_ms, register_regions_ms=reg_ms,
             regions=len(regions), link_ms=ini.link_ms, metadata_bytes=ini.metadata_bytes, backend=str(ini.backend))
    finally:
        try:
            parent.send("stop")
        except OSError:
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        if wrap:
            shutil.rmtree(os.path.dirname(launcher), ignore_errors=True)


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        run_peer(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the suite as one line
        print(json.dumps({"kind": "error", "error": f"{type(exc).__name__}: {exc}"[:1000]}), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
