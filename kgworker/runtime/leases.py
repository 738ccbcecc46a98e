"""Lease renewal and batched acknowledgement: the per-node Redis traffic that is not claims.

One timer renews every claim the node holds (one ``renew.lua`` per provider, all in one
pipeline) and every unit (one ``handler.renew_units`` call) every lease/3. A claim or unit
reported lost, or not renewed for a whole lease because Redis was unreachable, is cancelled
locally and never acknowledged: another node may have it now. Acks that arrive while one
pipeline is in flight are sent together in the next one, so a busy node pays far less than
one round trip per job and an idle node pays no added latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from redis.exceptions import RedisError

from kgworker.queue import scripts
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
            except (RedisError, OSError) as exc:
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


async def renew_once(ctx: NodeContext) -> None:
    """Renew every claim and unit the node holds; cancel what was lost."""
    await _renew_claims(ctx)
    if ctx.has_units and ctx.units:
        await _renew_units(ctx)


async def _renew_claims(ctx: NodeContext) -> None:
    by_provider: dict[str, list[HeldClaim]] = defaultdict(list)
    for held in ctx.claims.values():
        by_provider[held.queue.provider].append(held)
    if not by_provider:
        return
    started = time.monotonic()
    calls = [
        ctx.queue(provider).renew_call([h.claimed for h in holds])
        for provider, holds in by_provider.items()
    ]
    try:
        results: list[Any] = await scripts.run_many(ctx.redis, calls)
    except (RedisError, OSError) as exc:
        ctx.health.failed("redis", exc)
        results = [exc] * len(calls)
    else:
        ctx.health.ok("redis")
    for (_provider, holds), result in zip(by_provider.items(), results, strict=True):
        if isinstance(result, BaseException):
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


async def _renew_units(ctx: NodeContext) -> None:
    held_units = list(ctx.units.values())
    started = time.monotonic()
    try:
        lost = await ctx.handler.renew_units(
            ctx.owner, [h.unit for h in held_units], ctx.lease_seconds
        )
    except Exception:
        log.exception("renewing unit leases failed")
        lost = {
            h.unit.key for h in held_units if time.monotonic() - h.renewed_at > ctx.lease_seconds
        }
    else:
        for held in held_units:
            if held.unit.key not in lost:
                held.renewed_at = started
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


async def renewal_loop(ctx: NodeContext) -> None:
    """Every lease/3 seconds, for the life of the node (including the shutdown grace)."""
    interval = ctx.lease_seconds / 3
    while True:
        await asyncio.sleep(interval)
        await renew_once(ctx)
