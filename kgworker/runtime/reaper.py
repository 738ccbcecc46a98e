"""The reaper: expired claims and dead owners' claims back to the queue head, poison items
to the DLQ.

Any node serving a provider may reap it, but only the holder of ``kgw:lock:reaper:{P}``
does (a token-fenced lock with a TTL of three intervals, extended on every pass, taken over
at once from a holder whose beats say it is dead: :mod:`kgworker.queue.locks`). The lock
is per provider so that a provider is swept by some node that serves it, even when no node
serves every provider.

Each sweep reads the owners the provider's claims name and their beats
(:mod:`kgworker.queue.liveness`): a dead owner's claims go back in this sweep, not when
their lease runs out, so a node killed with SIGKILL costs ``DEAD_AFTER_MS`` plus at most
one interval. The lease stays the fence for an owner that lives but does not renew (stuck),
and the only judge of an owner that never beat. ``reap.lua`` is atomic and idempotent and
takes a claim only while it still names the owner judged dead, so a lock lost to a pause
costs at most one duplicate sweep, never a lost or doubled item; a node judged dead that
was only paused finds its claims gone (its renewal and ack are refused by their tokens).

After this node could not reach Redis (a failover, a restart) it judges no owner dead
until it has reached Redis again for ``DEAD_AFTER_MS``: every node's beats stopped during
the outage, and they need that long to show who came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from kgworker.keys import reaper_lock_key
from kgworker.queue import liveness, locks
from kgworker.queue.connection import REDIS_ERRORS
from kgworker.queue.provider_queue import ProviderQueue
from kgworker.runtime.context import NodeContext

log = logging.getLogger(__name__)


class Reaper:
    """Sweeps the providers this node serves, under their reaper locks."""

    def __init__(self, ctx: NodeContext, providers: list[str]) -> None:
        self.ctx = ctx
        self.providers = providers  #: shared with the provider guard: the live list
        self.token = locks.lock_token(ctx.owner)
        self.held: set[str] = set()
        #: monotonic time since Redis answered every sweep (None: the last one failed);
        #: dead owners are judged once it is ``DEAD_AFTER_MS`` ago
        self.reachable_since: float | None = float("-inf")

    @property
    def interval(self) -> float:
        return self.ctx.settings.kg_reaper_interval

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except REDIS_ERRORS as exc:
                self.reachable_since = None
                self.ctx.health.failed("redis", exc)
            await asyncio.sleep(self.interval)

    def judges_liveness(self) -> bool:
        """Whether Redis answered long enough for the beats to tell the dead (see above)."""
        if self.reachable_since is None:
            self.reachable_since = time.monotonic()
        return time.monotonic() - self.reachable_since >= liveness.DEAD_AFTER_MS / 1000

    async def sweep(self) -> None:
        ttl_ms = int(self.interval * 3000) + 1000
        grace_ms = max(1000, int(self.interval * 1000))
        for provider in list(self.providers):
            key = reaper_lock_key(provider)
            if not await locks.take(self.ctx.redis, key, self.token, ttl_ms):
                self.held.discard(provider)
                continue
            self.held.add(provider)
            queue = self.ctx.queue(provider)
            result = await queue.reap(active_grace_ms=grace_ms, dead=await self._dead(queue))
            metrics = self.ctx.metrics
            metrics.stalls[provider] += result.requeued + result.dead_lettered
            metrics.dead_letters[provider] += result.dead_lettered
            metrics.rescued[provider] += result.rescued
            if result.requeued or result.dead_lettered or result.rescued:
                log.warning(
                    "reaped: %d requeued, %d dead-lettered (%d of a dead node),"
                    " %d rescued from active",
                    result.requeued,
                    result.dead_lettered,
                    result.early,
                    result.rescued,
                    extra={"provider": provider},
                )
        self.ctx.health.ok("redis")

    async def _dead(self, queue: ProviderQueue) -> dict[str, str]:
        """Claim id → owner of the claims whose owner beat once and fell silent."""
        if not self.judges_liveness():
            return {}
        owners = await queue.claim_owners()
        if not owners:
            return {}
        dead = (await liveness.states(self.ctx.redis, owners.values())).dead
        return {claim_id: owner for claim_id, owner in owners.items() if owner in dead}

    async def release_locks(self) -> None:
        """Give the locks up at shutdown so another node takes over without waiting."""
        for provider in list(self.held):
            key = reaper_lock_key(provider)
            with contextlib.suppress(*REDIS_ERRORS):
                await locks.release(self.ctx.redis, key, self.token)
        self.held.clear()
