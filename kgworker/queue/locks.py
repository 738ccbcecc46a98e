"""Fleet locks that name their holder, so that a dead holder's lock is taken over at once.

A lock (``lock.lua``: the reaper's per provider, the fleet duties') has a TTL of a few
intervals, which a holder killed with SIGKILL leaves to run out: its providers would go
unswept for that long. So the token is ``{owner}/{random}`` (owner = node name + run id, the
name the node beats under in ``kgw:liveness``): a taker refused the lock reads the holder's
beats, and when they say it is dead takes the lock over in one step (fenced: only if the
holder is still the one judged). A holder that never beat, or whose token names no owner
(an older node), is waited out as before.
"""

from __future__ import annotations

import secrets

from kgworker.queue import liveness, scripts
from kgworker.queue.connection import RedisClient

SEPARATOR = "/"


def lock_token(owner: str) -> str:
    """A fresh token naming ``owner`` (one per lock holder object)."""
    return f"{owner}{SEPARATOR}{secrets.token_hex(8)}"


def holder_owner(token: object) -> str | None:
    """The owner a lock token names, or None (no owner: wait the TTL out)."""
    text = token.decode("utf-8", "replace") if isinstance(token, bytes) else token
    if not isinstance(text, str) or SEPARATOR not in text:
        return None
    owner = text.rsplit(SEPARATOR, 1)[0]
    return owner or None


async def take(redis: RedisClient, key: str, token: str, ttl_ms: int) -> bool:
    """Take or extend the lock ``key``; a holder judged dead loses it to us now."""
    if await scripts.run(redis, "lock", [key], [token, ttl_ms, "1"]):
        return True
    holder = await redis.get(key)
    owner = holder_owner(holder)
    if holder is None or owner is None:
        return holder is None and bool(
            await scripts.run(redis, "lock", [key], [token, ttl_ms, "1"]))
    if owner not in (await liveness.states(redis, [owner])).dead:
        return False
    return bool(await scripts.run(redis, "lock", [key], [token, ttl_ms, "1", holder]))


async def release(redis: RedisClient, key: str, token: str) -> bool:
    """Give the lock up (only if this token holds it)."""
    return bool(await scripts.run(redis, "lock", [key], [token, 0, "0"]))
