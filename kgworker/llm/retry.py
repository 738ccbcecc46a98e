"""Retrying transient call failures: exponential backoff with full jitter, Retry-After first.

Full jitter (sleep uniformly in ``[0, min(cap, base * 2**n)]``) spreads the retries of many
slots and nodes instead of having them hit a recovering provider in lock-step. A server's
Retry-After is a floor: we never come back earlier than it asked. Fatal kinds (400, 401,
403, content filter) are raised at once with the provider's message: retrying cannot help.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kgworker.config import Settings
from kgworker.llm.errors import LLMCallError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A Retry-After longer than this is not waited out inside one call.
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 1.0
    cap: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.kg_llm_max_attempts, settings.kg_llm_backoff_base, settings.kg_llm_backoff_cap
        )


def backoff_delay(
    failed_attempt: int, policy: RetryPolicy, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to sleep after attempt number ``failed_attempt`` (1-based) failed."""
    ceiling = min(policy.cap, policy.base * 2 ** (failed_attempt - 1))
    delay = rng.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_error: Callable[[LLMCallError, int], Awaitable[None]] | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """Run ``attempt(n)`` until it succeeds; returns (result, retries used).

    ``on_error`` sees every failure before the decision (the limiter uses it to slow the
    whole provider on a 429). The last error is raised with ``attempts`` set.
    """
    rng = rng or random.Random()
    number = 1
    while True:
        try:
            return await attempt(number), number - 1
        except LLMCallError as exc:
            exc.attempts = number
            if on_error is not None:
                await on_error(exc, number)
            too_long = exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER
            if not exc.kind.transient or number >= policy.max_attempts or too_long:
                raise
            delay = backoff_delay(number, policy, exc.retry_after, rng)
            log.warning(
                "LLM call failed (%s), retry %d/%d in %.2fs",
                exc,
                number,
                policy.max_attempts - 1,
                delay,
            )
            await sleep(delay)
            number += 1
