"""Burst mode (``KG_BURST``, ``kgworker run --burst``): stop once nothing is left to do.

For cron jobs, batch jobs and notebooks, like the burst workers of arq and RQ. The node is
idle when, for :data:`SETTLE_SECONDS` in a row, it holds nothing itself (no claim, no
unit, no slot task) and every queue it serves is empty in Redis: the queue, its active
list (items between BLMOVE and their claim), its claims (a node works a book, or waits to
retry one) and its open hash (a book whose chapters any node may still claim). So a burst
node helps with the books other nodes opened and stops when the fleet has finished them;
a paused provider's waiting items keep it waiting (it never drops work). Then it stops as
on SIGTERM, with exit code 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kgworker.keys import ProviderKeys
from kgworker.queue.connection import REDIS_ERRORS, RedisClient
from kgworker.runtime.context import NodeContext

log = logging.getLogger(__name__)

#: How long everything must stay empty: covers a producer pushing the next book right
#: after the last one finished, and the hand-over between one node's ack and the next claim.
SETTLE_SECONDS = 2.0
CHECK_SECONDS = 0.25


async def queues_empty(redis: RedisClient, providers: list[str]) -> bool:
    """Nothing waiting, claimed or open on any of ``providers`` (one pipeline)."""
    if not providers:
        return True
    pipe = redis.pipeline(transaction=False)
    for provider in providers:
        keys = ProviderKeys.for_provider(provider)
        pipe.llen(keys.queue)
        pipe.llen(keys.active)
        pipe.hlen(keys.claims)
        pipe.hlen(keys.open)
    return not any(int(n) for n in await pipe.execute())


def holds_nothing(ctx: NodeContext) -> bool:
    return not ctx.claims and not ctx.units and not ctx.work


async def burst_watch(
    ctx: NodeContext, providers: list[str], ready: asyncio.Event, done: Callable[[], None]
) -> None:
    """Call ``done`` once the node and its queues stay idle for the settle period.

    ``providers`` is the node's live list; ``ready`` is set once it has been read, so a
    node whose provider list is not known yet does not count as idle.
    """
    await ready.wait()
    idle_since: float | None = None
    while True:
        idle = False
        if holds_nothing(ctx):
            try:
                idle = await queues_empty(ctx.redis, list(providers))
                ctx.health.ok("redis")
            except REDIS_ERRORS as exc:
                ctx.health.failed("redis", exc)
        now = time.monotonic()
        if not idle:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= SETTLE_SECONDS:
            served = ", ".join(providers) or "no provider"
            log.info("burst: nothing left to do on %s: stopping", served)
            done()
            return
        await asyncio.sleep(CHECK_SECONDS)
