# SPDX-License-Identifier: Apache-2.0
"""The per-peer health state machine (llm_datadist.integrations.health), on a fake clock."""
from __future__ import annotations

import pytest

from llm_datadist.integrations import HealthPolicy, HealthRegistry, PeerHealth, PeerState


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def peer(**policy):
    clock = Clock()
    return PeerHealth(7, HealthPolicy(**policy), clock), clock


def test_failure_then_success_recovers():
    h, _ = peer()
    assert h.state is PeerState.ACTIVE and h.routable
    assert h.record_failure("LLM_TIMEOUT", "fatal") is PeerState.RECOVERING
    assert h.routable
    assert h.record_success() is PeerState.ACTIVE


def test_failure_rate_over_window_goes_relinking_then_halted():
    h, clock = peer(window_s=10, failure_rate=0.5, min_events=3, max_relink_attempts=2, relink_interval_s=0.2)
    for _ in range(5):
        h.record_success()
    h.record_failure("LLM_FAILED", "fatal")            # 1 of 6 failed
    assert h.state is PeerState.RECOVERING
    h.record_failure("LLM_FAILED", "fatal")
    h.record_failure("LLM_FAILED", "fatal")            # 3 of 8: below 0.5
    assert h.state is PeerState.RECOVERING
    clock.t += 11                                      # the successes leave the window
    h.record_failure("LLM_FAILED", "fatal")            # 1 of 1, but fewer than min_events
    assert h.state is PeerState.RECOVERING
    h.record_failure("LLM_FAILED", "fatal")
    h.record_failure("LLM_FAILED", "fatal")            # 3 of 3 >= 0.5
    assert h.state is PeerState.RELINKING and not h.routable
    assert h.wants_relink() and not h.wants_relink()   # one attempt per interval
    assert h.relink_failed("refused") is PeerState.RELINKING
    clock.t += 0.3
    assert h.wants_relink()
    assert h.relink_failed("refused") is PeerState.HALTED and not h.routable
    assert [to for _, to, _ in h.history] == ["RECOVERING", "RELINKING", "HALTED"]


def test_broken_link_goes_straight_to_relinking_and_relink_restores():
    h, _ = peer()
    assert h.record_failure("LLM_LINK_FAILED", "relink") is PeerState.RELINKING
    assert h.wants_relink()
    assert h.relink_succeeded() is PeerState.ACTIVE
    assert h.failure_rate() == (0.0, 0)                # a fresh window


def test_halted_peer_is_probed_and_returns():
    h, clock = peer(max_relink_attempts=1, probe_interval_s=0.5)
    h.record_failure("LLM_LINK_FAILED", "relink")
    assert h.wants_relink()
    assert h.relink_failed() is PeerState.HALTED
    clock.t += 0.1
    assert not h.wants_relink()                        # probes are spaced by probe_interval_s
    clock.t += 0.5
    assert h.wants_relink()
    assert h.relink_succeeded() is PeerState.ACTIVE
    assert h.history[-1][2] == "the peer returned: relinked"
    assert h.record_success() is PeerState.ACTIVE
    assert h.relink_failed() is PeerState.ACTIVE       # no effect outside RELINKING


def test_active_peer_never_wants_relink_and_registry():
    reg = HealthRegistry(HealthPolicy(max_relink_attempts=1))
    assert not reg.peer(1).wants_relink()
    reg.peer(2).record_failure("LLM_LINK_FAILED", "relink")
    assert reg.routable([1, 2, 3]) == [1, 3]
    snap = reg.snapshot()
    assert snap[2]["state"] == "RELINKING" and snap[2]["last_error"]["code"] == "LLM_LINK_FAILED"


@pytest.mark.parametrize("bad", [{"window_s": 0}, {"failure_rate": 0}, {"failure_rate": 1.5},
                                 {"min_events": 0}, {"max_relink_attempts": 0}])
def test_policy_validation(bad):
    with pytest.raises(ValueError):
        HealthPolicy(**bad)
