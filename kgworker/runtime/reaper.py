"""The reaper: expired claims back to the queue head, poison items to the DLQ.

Any node serving a provider may reap it, but only the holder of ``kgw:lock:reaper:{P}``
does (a token-fenced lock with a TTL of three intervals, extended on every pass). The lock
is per provider so that a provider is swept by some node that serves it, even when no node
serves every provider. ``reap.lua`` is atomic and idempotent, so a lock lost to a pause
costs at most one duplicate sweep, never a lost or doubled item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from kgworker.keys import reaper_lock_key
from kgworker.queue import scripts
from kgworker.queue.connection import REDIS_ERRORS
from kgworker.runtime.context import NodeContext

log = logging.getLogger(__name__)


class Reaper:
    """Sweeps the providers this node serves, under their reaper locks."""

    def __init__(self, ctx: NodeContext, providers: list[str]) -> None:
        self.ctx = ctx
        self.providers = providers  #: shared with the provider guard: the live list
        self.token = secrets.token_hex(8)
        self.held: set[str] = set()

    @property
    def interval(self) -> float:
        return self.ctx.settings.kg_reaper_interval

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except REDIS_ERRORS as exc:
                self.ctx.health.failed("redis", exc)
            await asyncio.sleep(self.interval)

    async def sweep(self) -> None:
        ttl_ms = int(self.interval * 3000) + 1000
        grace_ms = max(1000, int(self.interval * 1000))
        for provider in list(self.providers):
            key = reaper_lock_key(provider)
            got = await scripts.run(self.ctx.redis, "lock", [key], [self.token, ttl_ms, "1"])
            if not got:
                self.held.discard(provider)
                continue
            self.held.add(provider)
            result = await self.ctx.queue(provider).reap(active_grace_ms=grace_ms)
            metrics = self.ctx.metrics
            metrics.stalls[provider] += result.requeued + result.dead_lettered
            metrics.dead_letters[provider] += result.dead_lettered
            metrics.rescued[provider] += result.rescued
            if result.requeued or result.dead_lettered or result.rescued:
                log.warning(
                    "reaped: %d requeued, %d dead-lettered, %d rescued from active",
                    result.requeued,
                    result.dead_lettered,
                    result.rescued,
                    extra={"provider": provider},
                )
        self.ctx.health.ok("redis")

    async def release_locks(self) -> None:
        """Give the locks up at shutdown so another node takes over without waiting."""
        for provider in list(self.held):
            key = reaper_lock_key(provider)
            with contextlib.suppress(*REDIS_ERRORS):
                await scripts.run(self.ctx.redis, "lock", [key], [self.token, 0, "0"])
        self.held.clear()
