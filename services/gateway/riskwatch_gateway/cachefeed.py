"""Follow one cache pub/sub channel for as long as the gateway runs, resubscribing with backoff when it drops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from riskwatch.cache import Cache
from riskwatch.errors import DecodeError, Unavailable
from riskwatch.retry import RetryCallState, retrying

log = logging.getLogger(__name__)
RESUBSCRIBE_INITIAL_S = 0.5
RESUBSCRIBE_MAX_S = 10.0


async def follow(
    cache: Cache,
    channel: str,
    handle: Callable[[bytes], Awaitable[None]],
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Hand every message of `channel` to `handle` (a DecodeError skips that message); `on_subscribed` runs after
    each (re)subscription, to catch up on what was published while we were not listening."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("cache channel %s unavailable (%s); resubscribing in %.1fs", channel, error, delay)

    while True:
        async for attempt in retrying(
            retry_on=Unavailable, initial_s=RESUBSCRIBE_INITIAL_S, max_s=RESUBSCRIBE_MAX_S, before_sleep=before_sleep
        ):
            with attempt:
                async with cache.subscribe(channel) as messages:
                    if on_subscribed is not None:
                        await on_subscribed()
                    async for data in messages:
                        try:
                            await handle(data)
                        except DecodeError as exc:
                            log.warning("cache channel %s: skipped a message: %s", channel, exc)
        # The subscription ended without an error (the cache closed it): subscribe again shortly.
        await asyncio.sleep(RESUBSCRIBE_INITIAL_S)
