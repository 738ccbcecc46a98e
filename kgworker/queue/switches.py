"""Fleet-wide provider switches in Redis: the chaishu suspend key and the fallback toggles.

``ai:provider:suspend:{name}`` pauses a provider on every node (and in the old worker):
the breaker sets it after consecutive failures, the main app or an operator sets it by
hand, and its value is ``{"until": epoch}`` as chaishu writes it (the key existing is what
pauses; the value is advisory). ``kgw:provider_fallback`` marks providers whose waiting
tasks may move to their backups while they are suspended.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kgworker.keys import FALLBACK_KEY, LlmKeys, fail_key, suspend_key
from kgworker.queue.connection import RedisClient

#: A manual pause without a length stays until lifted; its "until" is this far away.
INDEFINITE_SECONDS = 10 * 365 * 24 * 3600


async def suspend(redis: RedisClient, provider: str, seconds: int | None = None) -> None:
    """Pause ``provider`` for ``seconds`` (None: until :func:`lift`)."""
    length = INDEFINITE_SECONDS if seconds is None else seconds
    value = json.dumps({"until": int(time.time()) + length})
    await redis.set(suspend_key(provider), value, ex=seconds)


async def lift(redis: RedisClient, provider: str) -> bool:
    """Lift a pause or breaker suspension and forget failures and cool-downs; True if it
    was suspended."""
    pipe = redis.pipeline(transaction=False)
    pipe.exists(suspend_key(provider))
    pipe.delete(suspend_key(provider))
    pipe.delete(fail_key(provider))
    pipe.delete(LlmKeys.for_provider(provider).cooldown)
    was, *_ = await pipe.execute()
    return bool(was)


async def suspended(redis: RedisClient, *providers: str) -> bool:
    """True when any of ``providers`` is suspended now."""
    return bool(await redis.exists(*(suspend_key(name) for name in providers)))


async def first_unsuspended(redis: RedisClient, providers: tuple[str, ...]) -> str | None:
    """The first of ``providers`` that is not suspended itself (one round trip)."""
    if not providers:
        return None
    pipe = redis.pipeline(transaction=False)
    for name in providers:
        pipe.exists(suspend_key(name))
    for name, paused in zip(providers, await pipe.execute(), strict=True):
        if not paused:
            return name
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def set_fallback(redis: RedisClient, provider: str, on: bool) -> None:
    if on:
        await redis.hset(FALLBACK_KEY, provider.lower(), "on")
    else:
        await redis.hdel(FALLBACK_KEY, provider.lower())


async def fallback_enabled(redis: RedisClient) -> set[str]:
    """Providers whose operator turned fallback on."""
    return {_text(k).lower() for k, v in (await redis.hgetall(FALLBACK_KEY)).items()
            if _text(v) == "on"}
