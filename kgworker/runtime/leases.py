"""Lease renewal and batched acknowledgement: the per-node Redis traffic that is not claims.

One timer renews every claim the node holds (one ``renew.lua`` per provider, all in one
pipeline) and every unit (one ``handler.renew_units`` call) every lease/3. A claim or unit
reported lost is cancelled locally and never acknowledged: another node may have it now. A
queue claim not renewed for a whole lease because Redis was unreachable is given up too
(the reaper returns it); a unit whose store cannot be asked is kept — its owner lives, and
the fleet does not take a live owner's units (see ``store.chapters.reap_expired``). A
renewal that fails (a failover, a Cluster slot move) is retried after 0.25 s, doubling up
to 2 s, instead of waiting for the next lease/3 tick, so a short outage costs no lease.
Acks that arrive while one pipeline is in flight are sent together in the next one, so a
busy node pays far less than one round trip per job and an idle node pays no added
latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from kgworker.queue import scripts
from kgworker.queue.connection import REDIS_ERRORS
from kgworker.queue.provider_queue import Claimed, ProviderQueue
from kgworker.runtime.context import HeldClaim, NodeContext

log = logging.getLogger(__name__)


class Acker:
    """Coalesces acknowledgements into pipelines; ``ack`` returns True unless fenced out."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._pending: list[tuple[scripts.Call, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def ack(self, queue: ProviderQueue, claimed: Claimed) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((queue.ack_call(claimed), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="acker")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await scripts.run_many(self.ctx.redis, [call for call, _ in batch])
            except REDIS_ERRORS as exc:
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(bool(result))


def lose_claim(ctx: NodeContext, held: HeldClaim, why: str) -> None:
    """Forget a claim whose lease is gone and cancel the local work bound to it."""
    ctx.drop_claim(held)
    provider = held.queue.provider
    ctx.metrics.lease_losses[provider] += 1
    task_id = held.job.task_id if held.job else None
    extra = {"provider": provider, "task_id": task_id}
    log.warning("lease lost (%s): cancelling", why, extra=extra)
    for task in held.tasks:
        task.cancel()


async def renew_once(ctx: NodeContext) -> bool:
    """Renew every claim and unit the node holds; cancel what was lost.

    Returns False when Redis could not be asked for some claims (retry soon).
    """
    ok = await _renew_claims(ctx)
    if ctx.has_units and ctx.units:
        await _renew_units(ctx)
    return ok


async def _renew_claims(ctx: NodeContext) -> bool:
    by_provider: dict[str, list[HeldClaim]] = defaultdict(list)
    for held in ctx.claims.values():
        by_provider[held.queue.provider].append(held)
    if not by_provider:
        return True
    started = time.monotonic()
    calls = [
        ctx.queue(provider).renew_call([h.claimed for h in holds])
        for provider, holds in by_provider.items()
    ]
    try:
        results: list[Any] = await scripts.run_many(ctx.redis, calls)
    except REDIS_ERRORS as exc:
        ctx.health.failed("redis", exc)
        results = [exc] * len(calls)
    else:
        ctx.health.ok("redis")
    ok = True
    for (_provider, holds), result in zip(by_provider.items(), results, strict=True):
        if isinstance(result, BaseException):
            ok = False
            for held in holds:  # not renewed: give up once a whole lease has passed
                if time.monotonic() - held.renewed_at > ctx.lease_seconds:
                    lose_claim(ctx, held, "not renewed for a whole lease")
            continue
        lost = {r.decode() if isinstance(r, bytes) else str(r) for r in result}
        for held in holds:
            if held.claimed.claim_id in lost:
                if ctx.claims.get(held.claimed.claim_id) is held:
                    lose_claim(ctx, held, "taken back by the reaper")
            else:
                held.renewed_at = started
    return ok


async def _renew_units(ctx: NodeContext) -> None:
    held_units = list(ctx.units.values())
    try:
        lost = await ctx.handler.renew_units(
            ctx.owner, [h.unit for h in held_units], ctx.lease_seconds
        )
    except Exception as exc:
        # The store cannot be asked (an outage): keep the units. Whether they are still
        # ours is known once it answers again; meanwhile the node's liveness key tells the
        # fleet that their owner lives, so nobody takes them and no attempt is spent.
        log.warning("renewing unit leases failed (%s): keeping them", type(exc).__name__)
        return
    for held in held_units:
        if held.unit.key in lost and ctx.units.get(held.unit.key) is held:
            del ctx.units[held.unit.key]
            ctx.metrics.lease_losses[held.job.provider] += 1
            log.warning(
                "unit lease lost: cancelling %s",
                held.unit.key,
                extra={"provider": held.job.provider, "task_id": held.job.task_id},
            )
            if held.task is not None:
                held.task.cancel()


#: First and longest wait before a failed renewal is tried again (seconds).
RENEW_RETRY_FIRST = 0.25
RENEW_RETRY_CAP = 2.0


async def renewal_loop(ctx: NodeContext) -> None:
    """Every lease/3 seconds, for the life of the node (including the shutdown grace).

    After a failed renewal the next try comes sooner (0.25 s, doubling, at most 2 s or
    lease/3), so leases survive a failover that is shorter than what is left of them.
    """
    interval = ctx.lease_seconds / 3
    delay = interval
    retry = RENEW_RETRY_FIRST
    while True:
        await asyncio.sleep(delay)
        if await renew_once(ctx):
            delay, retry = interval, RENEW_RETRY_FIRST
        else:
            delay = min(retry, interval)
            retry = min(retry * 2, RENEW_RETRY_CAP)
