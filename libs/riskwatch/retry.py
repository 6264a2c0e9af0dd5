"""Backoff for every loop that waits out a failure: one policy (exponential, capped) on tenacity's retry loops.

Each loop says what it retries on and how to log the wait; the schedule is always initial, 2 × initial, … up to
the maximum. `retrying` is for coroutines, `retrying_blocking` for threads that must stop waiting when told to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base

from riskwatch.errors import Unavailable

__all__ = ["RetryCallState", "backoff", "log_retry", "retrying", "retrying_blocking"]

Retryable = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def backoff(initial_s: float, max_s: float) -> wait_exponential:
    """initial_s, 2 × initial_s, 4 × initial_s, … never more than max_s."""
    return wait_exponential(multiplier=initial_s, min=initial_s, max=max(initial_s, max_s))


def log_retry(logger: logging.Logger, what: str, level: int = logging.WARNING) -> Callable[[RetryCallState], None]:
    """A `before_sleep` that logs `<what> failed (<error>); retrying in N s`."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.log(level, "%s failed (%s); retrying in %.1f s", what, error, delay)

    return before_sleep


def _retry_on(retry_on: Retryable) -> retry_base:
    if isinstance(retry_on, type | tuple):
        return retry_if_exception_type(retry_on)
    return retry_if_exception(retry_on)


def retrying(
    *,
    retry_on: Retryable,
    initial_s: float,
    max_s: float,
    before_sleep: Callable[[RetryCallState], None] | None = None,
    attempts: int | None = None,
) -> AsyncRetrying:
    """`async for attempt in retrying(...): with attempt: ...` — retries the block while it raises `retry_on`,
    forever or up to `attempts` times (then the last error is raised as it was)."""
    return AsyncRetrying(
        retry=_retry_on(retry_on),
        wait=backoff(initial_s, max_s),
        stop=stop_never if attempts is None else stop_after_attempt(attempts),
        before_sleep=before_sleep,
        reraise=True,
    )


class _stop_when_set(stop_base):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


def retrying_blocking(
    *,
    retry_on: Retryable,
    initial_s: float,
    max_s: float,
    stop: threading.Event,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """The thread version: waits on `stop` instead of sleeping, and gives up with Unavailable once `stop` is set
    (before an attempt or during a wait), chained to the last error."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Unavailable("stopped while waiting to retry")

    def give_up(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        raise Unavailable(f"stopped after {state.attempt_number} attempt(s) ({error})") from error

    return Retrying(
        retry=_retry_on(retry_on),
        wait=backoff(initial_s, max_s),
        stop=_stop_when_set(stop),
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
