# SPDX-License-Identifier: Apache-2.0
"""Per-peer health (DESIGN.md section 7): stop sending to a peer that keeps failing, relink it
when it returns.

    health = HealthRegistry(HealthPolicy(window_s=10.0, failure_rate=0.5, min_events=2))
    h = health.peer(101)
    if h.routable: ...                      # ACTIVE or RECOVERING
    h.record_success() / h.record_failure(code="LLM_TIMEOUT", action="fatal")
    if h.wants_relink(): ok = relink(); h.relink_succeeded() if ok else h.relink_failed()

States and transitions (each logged once, as a structured line on ``llm_datadist.health``):

    ACTIVE      --failure-->                                    RECOVERING
    RECOVERING  --success-->                                    ACTIVE
    RECOVERING  --failure rate >= threshold over the window-->  RELINKING
    ACTIVE/RECOVERING --failure whose action is "relink" (the link is broken)--> RELINKING
    RELINKING   --relink succeeded-->                           ACTIVE (window cleared)
    RELINKING   --max_relink_attempts relinks failed-->         HALTED
    HALTED      --a probe relink succeeded (the peer returned)--> ACTIVE

Routable: ACTIVE and RECOVERING. RELINKING is retried every ``relink_interval_s``, HALTED probed
every ``probe_interval_s``; ``wants_relink()`` says when. Thread-safe (one lock per peer). No
dependency on torch or on the native module; ``clock`` is injectable for tests.
"""
from __future__ import annotations

import enum
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

__all__ = ["PeerState", "HealthPolicy", "PeerHealth", "HealthRegistry"]

_log = logging.getLogger("llm_datadist.health")


class PeerState(str, enum.Enum):
    ACTIVE = "ACTIVE"
    RECOVERING = "RECOVERING"
    RELINKING = "RELINKING"
    HALTED = "HALTED"


@dataclass(frozen=True)
class HealthPolicy:
    """window_s: failures and successes older than this are forgotten. failure_rate: the share
    of failures in the window at which a RECOVERING peer goes RELINKING, once the window holds
    at least min_events outcomes. max_relink_attempts: failed relinks before HALTED."""
    window_s: float = 10.0
    failure_rate: float = 0.5
    min_events: int = 2
    max_relink_attempts: int = 2
    relink_interval_s: float = 0.2
    probe_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"window_s={self.window_s} must be > 0")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate={self.failure_rate} must be in (0, 1]")
        if self.min_events < 1 or self.max_relink_attempts < 1:
            raise ValueError("min_events and max_relink_attempts must be >= 1")


class PeerHealth:
    """The health of one peer (a remote cluster id)."""

    def __init__(self, peer: Any, policy: Optional[HealthPolicy] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.peer = peer
        self.policy = policy or HealthPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._events: Deque[Tuple[float, bool]] = deque()
        self._state = PeerState.ACTIVE
        self._relink_failures = 0
        self._last_attempt = float("-inf")
        self._changed_at = clock()
        self.history: List[Tuple[str, str, str]] = []    # (from, to, reason), oldest first
        self.last_error: Optional[Dict[str, Any]] = None

    # -- reading -----------------------------------------------------------------------------
    @property
    def state(self) -> PeerState:
        return self._state

    @property
    def routable(self) -> bool:
        return self._state in (PeerState.ACTIVE, PeerState.RECOVERING)

    def failure_rate(self) -> Tuple[float, int]:
        """(share of failures, number of outcomes) in the window now."""
        with self._lock:
            self._expire(self._clock())
            return self._rate()

    def snapshot(self) -> Dict[str, Any]:
        rate, n = self.failure_rate()
        return {"peer": self.peer, "state": self._state.value, "failure_rate": round(rate, 3), "events": n,
                "relink_failures": self._relink_failures, "history": list(self.history),
                "last_error": self.last_error}

    # -- outcomes ----------------------------------------------------------------------------
    def record_success(self) -> PeerState:
        with self._lock:
            now = self._clock()
            self._events.append((now, True))
            self._expire(now)
            if self._state is PeerState.RECOVERING:
                self._move(PeerState.ACTIVE, "a transfer succeeded")
            return self._state

    def record_failure(self, code: Optional[str] = None, action: Optional[str] = None,
                       error: Optional[Dict[str, Any]] = None) -> PeerState:
        """One failed operation with this peer; ``action`` is LLMException.action (``relink``:
        the link is known broken, go straight to RELINKING)."""
        with self._lock:
            now = self._clock()
            self._events.append((now, False))
            self._expire(now)
            self.last_error = error or ({"code": code, "action": action} if code or action else None)
            what = f"{code or 'failure'}" + (f" (action {action})" if action else "")
            if self._state in (PeerState.ACTIVE, PeerState.RECOVERING):
                rate, n = self._rate()
                if action == "relink":
                    self._move(PeerState.RELINKING, f"{what}: the link is broken")
                elif self._state is PeerState.RECOVERING and n >= self.policy.min_events \
                        and rate >= self.policy.failure_rate:
                    self._move(PeerState.RELINKING, f"{what}: failure rate {rate:.2f} over {n} outcomes in "
                                                    f"{self.policy.window_s:g} s >= {self.policy.failure_rate:g}")
                elif self._state is PeerState.ACTIVE:
                    self._move(PeerState.RECOVERING, what)
            return self._state

    # -- relinking ---------------------------------------------------------------------------
    def wants_relink(self) -> bool:
        """True when the owner should try a relink now (RELINKING or HALTED, interval passed);
        marks the attempt as started."""
        with self._lock:
            if self._state not in (PeerState.RELINKING, PeerState.HALTED):
                return False
            interval = (self.policy.relink_interval_s if self._state is PeerState.RELINKING
                        else self.policy.probe_interval_s)
            now = self._clock()
            if now - self._last_attempt < interval:
                return False
            self._last_attempt = now
            return True

    def relink_succeeded(self) -> PeerState:
        with self._lock:
            if self._state in (PeerState.RELINKING, PeerState.HALTED):
                returned = self._state is PeerState.HALTED
                self._events.clear()
                self._relink_failures = 0
                self._move(PeerState.ACTIVE, "the peer returned: relinked" if returned else "relinked")
            return self._state

    def relink_failed(self, reason: str = "") -> PeerState:
        with self._lock:
            if self._state is PeerState.RELINKING:
                self._relink_failures += 1
                if self._relink_failures >= self.policy.max_relink_attempts:
                    self._move(PeerState.HALTED, f"{self._relink_failures} relinks failed"
                                                 + (f" (last: {reason})" if reason else ""))
            return self._state

    # -- internals (lock held) ---------------------------------------------------------------
    def _expire(self, now: float) -> None:
        horizon = now - self.policy.window_s
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()

    def _rate(self) -> Tuple[float, int]:
        n = len(self._events)
        return ((sum(1 for _, ok in self._events if not ok) / n) if n else 0.0), n

    def _move(self, to: PeerState, reason: str) -> None:
        old, self._state = self._state, to
        self._changed_at = self._clock()
        self.history.append((old.value, to.value, reason))
        _log.log(logging.WARNING if to in (PeerState.RELINKING, PeerState.HALTED) else logging.INFO,
                 "%s", json.dumps({"event": "peer_state", "peer": self.peer, "from": old.value, "to": to.value,
                                   "reason": reason}),
                 extra={"remote_cluster_id": self.peer, "operation": "health"})


class HealthRegistry:
    """PeerHealth per peer, created on first use with one policy."""

    def __init__(self, policy: Optional[HealthPolicy] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or HealthPolicy()
        self._clock = clock
        self._peers: Dict[Any, PeerHealth] = {}
        self._lock = threading.Lock()

    def peer(self, peer: Any) -> PeerHealth:
        with self._lock:
            h = self._peers.get(peer)
            if h is None:
                h = self._peers[peer] = PeerHealth(peer, self.policy, self._clock)
            return h

    def routable(self, peers: List[Any]) -> List[Any]:
        return [p for p in peers if self.peer(p).routable]

    def snapshot(self) -> Dict[Any, Dict[str, Any]]:
        with self._lock:
            peers = list(self._peers.values())
        return {h.peer: h.snapshot() for h in peers}
