"""Which node runs are alive: ``kgw:alive:{owner}`` keys, refreshed every second.

A chapter claim names its owner (node name + run id). The claim's lease fences a node
that is alive but stuck; the liveness key tells a dead node from one that merely cannot
renew: a dead owner's claims go back at once (no need to wait out the lease), and a live
owner's are left alone while a store outage keeps it from renewing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kgworker.keys import EPOCH_KEY, alive_key
from kgworker.queue.connection import RedisClient

#: TTL of a node's liveness key, which it refreshes every second: how soon a dead node is
#: known.
ALIVE_TTL = 6


async def alive(redis: RedisClient, owners: Iterable[str]) -> frozenset[str]:
    """The ``owners`` whose liveness key exists now (one pipeline)."""
    names = sorted(set(owners))
    if not names:
        return frozenset()
    pipe = redis.pipeline(transaction=False)
    for owner in names:
        pipe.exists(alive_key(owner))
    return frozenset(o for o, found in zip(names, await pipe.execute(), strict=True) if found)


def new_epoch() -> str:
    """The value a node sets ``kgw:epoch`` to when it finds it missing: when (ms)."""
    return str(int(time.time() * 1000))


async def settled(redis: RedisClient) -> bool:
    """False for a while after Redis came back empty: every live node needs a refresh
    (about a second) to put its liveness key back, and until then a live node would look
    dead and lose its chapters."""
    raw = await redis.get(EPOCH_KEY)
    if raw is None:
        return False
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        since = int(text)
    except ValueError:
        return True
    return time.time() * 1000 - since > 2 * ALIVE_TTL * 1000
