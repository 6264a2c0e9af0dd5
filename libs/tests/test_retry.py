"""The one backoff policy: the schedule, what is retried, giving up, and stopping a blocked thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from tenacity import Retrying

from riskwatch.errors import Unavailable
from riskwatch.retry import RetryCallState, backoff, log_retry, retrying, retrying_blocking


def test_schedule_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    wait = backoff(0.5, 4.0)
    delays = []
    for attempt in range(1, 7):
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = attempt
        delays.append(wait(state))
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


async def test_retries_only_the_named_errors_and_then_succeeds() -> None:
    calls = 0
    async for attempt in retrying(retry_on=Unavailable, initial_s=0.001, max_s=0.002):
        with attempt:
            calls += 1
            if calls < 3:
                raise Unavailable("down")
    assert calls == 3

    with pytest.raises(KeyError):
        async for attempt in retrying(retry_on=Unavailable, initial_s=0.001, max_s=0.002):
            with attempt:
                raise KeyError("a bug is not retried")


async def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    calls = 0
    with pytest.raises(Unavailable, match="3"):
        async for attempt in retrying(retry_on=Unavailable, initial_s=0.001, max_s=0.001, attempts=3):
            with attempt:
                calls += 1
                raise Unavailable(str(calls))
    assert calls == 3


async def test_the_wait_is_logged_with_the_error_and_the_delay(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test-retry")
    failed = False
    with caplog.at_level(logging.WARNING, logger="test-retry"):
        async for attempt in retrying(
            retry_on=Unavailable, initial_s=0.01, max_s=0.01, before_sleep=log_retry(logger, "reading cam-01")
        ):
            with attempt:
                if not failed:
                    failed = True
                    raise Unavailable("connection refused")
    assert "reading cam-01 failed (connection refused); retrying in 0.0 s" in caplog.text


def test_a_blocked_thread_stops_waiting_as_soon_as_it_is_told() -> None:
    stop = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            for attempt in retrying_blocking(retry_on=OSError, initial_s=30.0, max_s=30.0, stop=stop):
                with attempt:
                    raise OSError("camera unreachable")
        except Unavailable as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    stop.set()
    thread.join(5)
    assert time.monotonic() - started < 1.0
    assert len(outcome) == 1


def test_a_thread_told_to_stop_before_retrying_gives_up_with_the_cause() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Unavailable) as raised:
        for attempt in retrying_blocking(retry_on=OSError, initial_s=0.001, max_s=0.001, stop=stop):
            with attempt:
                raise OSError("no route")
    assert isinstance(raised.value.__cause__, OSError)
