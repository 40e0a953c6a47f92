# SPDX-License-Identifier: Apache-2.0
"""Hosts on one machine: network namespaces joined by veth pairs (iproute2, root), for the
two-host tests (tests/twohost) and `llm-datadist bench --crossns`.

    with Hosts(2) as hosts:                 # namespaces llmdd-<pid>-<n>-h0 / -h1
        a, b = hosts
        subprocess.run([*a.wrap, sys.executable, ...])   # runs inside a's namespace
        hosts.partition(b); hosts.heal(b)   # b's veth down / up
        hosts.rate_limit("40mbit")          # tbf on every veth end (this kernel has no netem)

Why namespaces model hosts: the library decides "same host" from the boot id and the network
namespace (abstract Unix sockets, which carry the shm channel, exist per namespace), so two
namespaces link the way two machines do: over the addresses given here.

Topology: two hosts are one veth pair with a /30 (10.213.0.1 and .2); more hosts each get a
veth into a bridge in a "switch" namespace and an address in 10.213.0.0/24. Only the connected
subnet is routed, no default route, so nothing leaves the namespaces. Names carry this process's
pid and a counter, so parallel runs (and several Hosts in one run) never collide. `close()` kills
every process still inside the namespaces and deletes them (their veths go with them); it runs
at the end of `with`, also on failure, and `close_all()` is the last resort (at exit too).

`unavailable()` says why namespaces cannot be made here (not root, no `ip`, the kernel refuses),
or None.
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Iterator, List, Optional, Sequence

SUBNET = "10.213.0"     # private; the /30 or /24 is only ever assigned inside our namespaces
FIRST_PORT = 26400      # each namespace is fresh, so any port is free; a counter avoids reuse
CMD_TIMEOUT = 10.0      # every ip / tc command is bounded

_counter = itertools.count()
_live: "set[Hosts]" = set()
_live_lock = threading.Lock()


def _ip(*args: str, timeout: float = CMD_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


_probe_result: Optional[List[Optional[str]]] = None


def unavailable() -> Optional[str]:
    """Why two hosts cannot be made on this machine, or None (probed once per process)."""
    global _probe_result
    if _probe_result is not None:
        return _probe_result[0]
    reason: Optional[str] = None
    if os.geteuid() != 0:
        reason = "network namespaces need root (the two-host tests run as root in CI)"
    elif shutil.which("ip") is None:
        reason = "no `ip` (iproute2) on PATH; .ci/run installs it"
    else:
        try:
            with Hosts(2) as hosts:
                hosts[0].run("true")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            reason = f"cannot make network namespaces here: {exc}"
    _probe_result = [reason]
    return reason


class Host:
    """One network namespace: its name, its address, and how to run things inside it."""

    def __init__(self, hosts: "Hosts", index: int, netns: str, ip: str, veth: str) -> None:
        self.hosts = hosts
        self.index = index
        self.netns = netns
        self.ip = ip
        self.veth = veth          # this host's end of its veth
        self._ports = itertools.count(FIRST_PORT)

    def __repr__(self) -> str:
        return f"Host({self.netns!r}, {self.ip})"

    @property
    def wrap(self) -> List[str]:
        """argv prefix that runs a command inside this namespace (`ip netns exec` execs the
        command in place, so the pid we get is the command's own)."""
        return ["ip", "netns", "exec", self.netns]

    def run(self, *argv: str, timeout: float = CMD_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([*self.wrap, *argv], capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"[{self.netns}] {' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
        return out

    def listen_address(self) -> str:
        """A fresh "ip:port" on this host's address."""
        return f"{self.ip}:{next(self._ports)}"

    def pids(self) -> List[int]:
        out = _ip("netns", "pids", self.netns, check=False)
        return [int(x) for x in out.stdout.split()] if out.returncode == 0 else []


class Hosts:
    """`count` namespaces joined by veths (see the module docstring); a context manager."""

    def __init__(self, count: int = 2) -> None:
        if count < 2:
            raise ValueError(f"Hosts needs at least 2 namespaces, got {count}")
        self.tag = f"llmdd-{os.getpid()}-{next(_counter)}"
        self.hosts: List[Host] = []
        self.switch: Optional[str] = None
        self._made: List[str] = []     # namespaces created, deleted by close()
        self._closed = False
        with _live_lock:
            _live.add(self)
        try:
            self._build(count)
        except BaseException:
            self.close()
            raise

    def _netns(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def _veth_name(self, k: int, end: str) -> str:
        # at most 15 characters; unique per process and Hosts even if created in the root namespace
        return f"v{os.getpid() % 10**7}{self.tag.rsplit('-', 1)[1][-3:]}{end}{k}"[:15]

    def _build(self, count: int) -> None:
        names = [self._netns(f"h{k}") for k in range(count)]
        if count == 2:
            va, vb = self._veth_name(0, "a"), self._veth_name(0, "b")
            _ip("link", "add", va, "netns", names[0], "type", "veth", "peer", "name", vb, "netns", names[1])
            ends = [(names[0], va, f"{SUBNET}.1", 30), (names[1], vb, f"{SUBNET}.2", 30)]
        else:
            self.switch = self._netns("sw")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            ends = []
            for k, ns in enumerate(names):
                vh, vs = self._veth_name(k, "h"), self._veth_name(k, "s")
                _ip("link", "add", vh, "netns", ns, "type", "veth", "peer", "name", vs, "netns", self.switch)
                _ip("-n", self.switch, "link", "set", vs, "master", "br0")
                _ip("-n", self.switch, "link", "set", vs, "up")
                ends.append((ns, vh, f"{SUBNET}.{k + 1}", 24))
        for k, (ns, veth, addr, prefix) in enumerate(ends):
            _ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", veth)
            _ip("-n", ns, "link", "set", veth, "up")
            self.hosts.append(Host(self, k, ns, addr, veth))
        # veths come up asynchronously: wait for carrier on every end (bounded)
        for h in self.hosts:
            self._wait_carrier(h)

    def _wait_carrier(self, host: Host, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while "LOWER_UP" not in _ip("-n", host.netns, "-o", "link", "show", host.veth).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}: {host.veth} has no carrier after {timeout} s")
            time.sleep(0.02)

    # -- access ---------------------------------------------------------------------------
    def __getitem__(self, k: int) -> Host:
        return self.hosts[k]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> "Hosts":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- faults ---------------------------------------------------------------------------
    def partition(self, host: Host) -> float:
        """Cuts `host` off (its veth down; the other end goes NO-CARRIER); returns the
        monotonic time it took effect."""
        _ip("-n", host.netns, "link", "set", host.veth, "down")
        return time.monotonic()

    def heal(self, host: Host) -> None:
        """Undoes partition(host) and waits for the carrier."""
        _ip("-n", host.netns, "link", "set", host.veth, "up")
        self._wait_carrier(host)

    def rate_limit(self, rate: str, burst: str = "64kb", latency: str = "2s",
                   hosts: Optional[Sequence[Host]] = None) -> None:
        """A token-bucket limit on the egress of each host's veth (`tc qdisc replace ... tbf`);
        `latency` bounds the queue, so a full queue drops and TCP backs off rather than the
        bytes being lost."""
        for h in hosts if hosts is not None else self.hosts:
            h.run("tc", "qdisc", "replace", "dev", h.veth, "root", "tbf", "rate", rate, "burst", burst,
                  "latency", latency)

    def unlimit(self) -> None:
        for h in self.hosts:
            h.run("tc", "qdisc", "del", "dev", h.veth, "root", check=False)

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Kills every process left in the namespaces, then deletes them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for ns in self._made:
            out = _ip("netns", "pids", ns, check=False)
            for pid in out.stdout.split() if out.returncode == 0 else []:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self._made):
            # a namespace whose last process is still exiting is deleted once it has gone; the
            # name goes at once
            _ip("netns", "del", ns, check=False)
        self._made.clear()
        with _live_lock:
            _live.discard(self)


def close_all() -> None:
    """Last resort (session end): every Hosts still open in this process."""
    with _live_lock:
        left = list(_live)
    for h in left:
        h.close()


atexit.register(close_all)
