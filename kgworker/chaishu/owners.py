"""Which chapter-claim owners are alive now, for the reaping rules of ``store.chapters``.

Reads the owners from MySQL and their beats from Redis (:mod:`kgworker.queue.liveness`);
while Redis cannot be asked the answer is None and nothing is reaped (a store outage never
costs a chapter).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.queue import liveness
from kgworker.queue.connection import REDIS_ERRORS, RedisClient
from kgworker.store.chapters import Owners, claim_owners


async def owners_now(engine: AsyncEngine, redis: RedisClient, settings: Settings) -> Owners | None:
    owners = await claim_owners(engine)
    try:
        known = await liveness.states(redis, owners)
    except REDIS_ERRORS:
        return None
    return Owners(alive=known.alive, dead=known.dead, lease_seconds=settings.kg_lease_seconds)
