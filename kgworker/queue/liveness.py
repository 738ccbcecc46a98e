"""Which node runs are alive: ``kgw:alive:{owner}`` keys, refreshed every second.

A chapter claim names its owner (node name + run id). The claim's lease fences a node
that is alive but stuck; the liveness key tells a dead node from one that merely cannot
renew: a dead owner's claims go back at once (no need to wait out the lease), and a live
owner's are left alone while a store outage keeps it from renewing.
"""

from __future__ import annotations

from collections.abc import Iterable

from kgworker.keys import alive_key
from kgworker.queue.connection import RedisClient


async def alive(redis: RedisClient, owners: Iterable[str]) -> frozenset[str]:
    """The ``owners`` whose liveness key exists now (one pipeline)."""
    names = sorted(set(owners))
    if not names:
        return frozenset()
    pipe = redis.pipeline(transaction=False)
    for owner in names:
        pipe.exists(alive_key(owner))
    return frozenset(o for o, found in zip(names, await pipe.execute(), strict=True) if found)
