# SPDX-License-Identifier: Apache-2.0
"""Retry what the error table calls retryable (DESIGN.md section 7).

    from llm_datadist.retry import retry
    retry(lambda: cache_manager.swap_blocks(src, dst, mapping), deadline=5.0)

Only an LLMException whose action is ``retry_now`` or ``retry_later`` (from its status row, or
from its context, which the core sets per CUDA error: a busy device, a launch out of resources
or a timeout is retryable; uncorrectable ECC, a lost device or any sticky error is fatal) and
that is recoverable is retried; anything else propagates at once. Waits grow exponentially with
full jitter (a uniform draw between 0 and the capped exponential), ``retry_now`` retries its
first time without waiting, and a total deadline bounds the whole thing. When it gives up, the
last exception is raised with ``attempts`` (and ``retry_gave_up``: "attempts" or "deadline")
added to its context.
"""
from __future__ import annotations

import functools
import logging
import random
import time
from typing import Any, Callable, Optional, TypeVar

from .status import LLMException

__all__ = ["RETRYABLE_ACTIONS", "is_retryable", "retry", "retrying"]

RETRYABLE_ACTIONS = frozenset({"retry_now", "retry_later"})

_log = logging.getLogger("llm_datadist.retry")
T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """True for an LLMException the error table (or its context) says to retry."""
    return isinstance(exc, LLMException) and exc.recoverable and exc.action in RETRYABLE_ACTIONS


def _note(exc: BaseException, **fields: Any) -> None:
    if isinstance(exc, LLMException):
        # The context is the exception's own record of what happened; the retry adds to it.
        exc._context.update(fields)  # noqa: SLF001


def retry(fn: Callable[[], T], *, attempts: int = 5, deadline: Optional[float] = 30.0,
          base_delay: float = 0.05, max_delay: float = 2.0,
          retry_if: Callable[[BaseException], bool] = is_retryable,
          on_retry: Optional[Callable[[int, BaseException, float], None]] = None,
          rng: Optional[random.Random] = None,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> T:
    """Calls ``fn()`` until it returns, retrying failures that ``retry_if`` accepts.

    attempts: calls at most (>= 1). deadline: seconds from the first call after which no retry
    starts (None: no limit); a wait that would end past it is not started. base_delay/max_delay:
    the n-th retry waits uniform(0, min(max_delay, base_delay * 2**(n-1))) seconds (none for the
    first retry of a ``retry_now`` error). on_retry(attempt, exc, delay) is called before each
    wait. rng/sleep/clock are injectable for tests.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise TypeError(f"attempts must be an int, got {type(attempts).__name__}")
    if attempts < 1:
        raise ValueError(f"attempts={attempts} must be >= 1")
    if deadline is not None and deadline < 0:
        raise ValueError(f"deadline={deadline} must be >= 0")
    if base_delay < 0 or max_delay < 0:
        raise ValueError("base_delay and max_delay must be >= 0")
    rng = rng or random.Random()
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below unless retried
            if not retry_if(exc):
                if attempt > 1:
                    _note(exc, attempts=attempt)
                raise
            if attempt >= attempts:
                _note(exc, attempts=attempt, retry_gave_up="attempts")
                raise
            first_now = attempt == 1 and isinstance(exc, LLMException) and exc.action == "retry_now"
            cap = min(max_delay, base_delay * (2 ** (attempt - 1)))
            delay = 0.0 if first_now else rng.uniform(0.0, cap)
            if deadline is not None and clock() + delay - start > deadline:
                _note(exc, attempts=attempt, retry_gave_up="deadline")
                raise
            _log.info("retrying after %s (attempt %d of %d, waiting %.3f s)",
                      getattr(exc, "status_code", type(exc).__name__), attempt, attempts, delay)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            if delay > 0:
                sleep(delay)


def retrying(**options: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form: ``@retrying(deadline=5.0)`` retries every call of the function."""
    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return retry(lambda: fn(*args, **kwargs), **options)
        return wrapper
    return decorate
