# SPDX-License-Identifier: Apache-2.0
"""llm_datadist.retry: retries only what the error table calls retryable, with exponential
backoff and full jitter under a total deadline (clock and sleep injected: no real waiting)."""
from __future__ import annotations

import random

import pytest

from llm_datadist import LLMException, LLMStatusCode
from llm_datadist.retry import RETRYABLE_ACTIONS, is_retryable, retry, retrying


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(errors, result="done"):
    """A callable raising errors[0], errors[1], ... then returning result."""
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result
    fn.calls = calls
    return fn


def busy():  # LLM_LINK_BUSY: retry_later in the table
    return LLMException("link busy", status_code=LLMStatusCode.LLM_LINK_BUSY)


def cuda_error(code, recoverable, action):  # what the core raises for a CUDA error
    return LLMException(f"cuMemcpyAsync failed: ({code})", status_code=LLMStatusCode.LLM_FAILED,
                        context={"cuda_code": code, "recoverable": recoverable, "action": action})


def test_classification_follows_the_table_and_the_context():
    assert RETRYABLE_ACTIONS == {"retry_now", "retry_later"}
    assert is_retryable(busy())
    assert not is_retryable(LLMException("x", status_code=LLMStatusCode.LLM_PARAM_INVALID))
    assert not is_retryable(LLMException("x", status_code=LLMStatusCode.LLM_DEVICE_MEM_ERROR))
    assert is_retryable(cuda_error(701, True, "retry_later"))
    assert not is_retryable(cuda_error(999, False, "fatal"))
    assert not is_retryable(LLMException("x", status_code=LLMStatusCode.LLM_LINK_BUSY,
                                         context={"recoverable": False}))
    assert not is_retryable(RuntimeError("not ours"))


def test_retries_until_success_with_full_jitter_backoff():
    clock = FakeClock()
    fn = failing([busy(), busy(), busy()])
    seen = []
    result = retry(fn, attempts=5, base_delay=0.1, max_delay=0.25, rng=random.Random(1),
                   sleep=clock.sleep, clock=clock.clock, on_retry=lambda a, e, d: seen.append((a, d)))
    assert result == "done" and len(fn.calls) == 4
    assert [a for a, _ in seen] == [1, 2, 3]
    caps = [0.1, 0.2, 0.25]  # base * 2**(n-1), capped by max_delay
    for (_, delay), cap, slept in zip(seen, caps, clock.sleeps):
        assert 0 <= delay <= cap and slept == delay
    # Full jitter: the waits are random draws, not the caps themselves.
    assert clock.sleeps != caps


def test_retry_now_retries_first_without_waiting():
    clock = FakeClock()
    # LLM_COPY_CACHE_FAILED (retry_now) has no Python member: it arrives as native_code.
    now_error = LLMException("copy failed", status_code=0x5010B016, context={"native_code": 0x5010B016})
    assert now_error.action == "retry_now"
    retry(failing([now_error, now_error]), sleep=clock.sleep, clock=clock.clock, rng=random.Random(0))
    assert len(clock.sleeps) == 1, "no wait before the first retry"


def test_non_retryable_errors_propagate_at_once():
    fatal = cuda_error(214, False, "fatal")
    fn = failing([fatal])
    with pytest.raises(LLMException) as info:
        retry(fn)
    assert info.value is fatal and len(fn.calls) == 1
    assert "attempts" not in info.value.context
    other = ValueError("bug")
    with pytest.raises(ValueError):
        retry(failing([other]))
    # Retryable first, then fatal: the attempt count is recorded.
    fn = failing([busy(), fatal])
    with pytest.raises(LLMException) as info:
        retry(fn, sleep=lambda s: None)
    assert info.value.context["attempts"] == 2


def test_gives_up_after_attempts_with_the_count_in_context():
    clock = FakeClock()
    errors = [busy() for _ in range(3)]
    with pytest.raises(LLMException) as info:
        retry(failing(errors), attempts=3, sleep=clock.sleep, clock=clock.clock)
    assert info.value is errors[-1]
    assert info.value.context["attempts"] == 3
    assert info.value.context["retry_gave_up"] == "attempts"
    assert info.value.to_dict()["details"]["attempts"] == 3


def test_total_deadline_bounds_the_retries():
    clock = FakeClock()

    def slow_failure():
        clock.now += 0.4  # each call takes 0.4 s
        raise busy()

    with pytest.raises(LLMException) as info:
        retry(slow_failure, attempts=100, deadline=1.0, base_delay=0.05, max_delay=0.05,
              sleep=clock.sleep, clock=clock.clock)
    assert info.value.context["retry_gave_up"] == "deadline"
    assert info.value.context["attempts"] == 3
    assert clock.now - 100.0 <= 1.0 + 0.4 + 1e-9


def test_decorator_and_argument_checks():
    calls = []

    @retrying(attempts=3, sleep=lambda s: None)
    def flaky(x, y=1):
        calls.append(x)
        if len(calls) < 2:
            raise busy()
        return x + y

    assert flaky(2, y=3) == 5 and calls == [2, 2]
    assert flaky.__name__ == "flaky"
    with pytest.raises(ValueError):
        retry(lambda: 1, attempts=0)
    with pytest.raises(TypeError):
        retry(lambda: 1, attempts=2.0)
    with pytest.raises(ValueError):
        retry(lambda: 1, deadline=-1)
