"""Working a claimed item or a unit inside a slot, and what follows: ack, retry, DLQ, open.

Cancellation is never cleaned up here. A task cancelled because its lease was lost has
already been removed from the node's tables (nothing to put back: someone else owns it);
a task cancelled at shutdown leaves its claim or unit in the tables, and the shutdown puts
everything still there back at once (see ``worker.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kgworker.queue.connection import REDIS_ERRORS
from kgworker.queue.provider_queue import MalformedItem, ReleaseOutcome, parse_item
from kgworker.runtime.context import HeldClaim, HeldUnit, NodeContext
from kgworker.runtime.handler import Job, JobStart, PermanentJobError
from kgworker.runtime.leases import Acker
from kgworker.runtime.slots import Slot

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the claiming node asks ``is_complete`` of an open job without local news.
OPEN_CHECK_SECONDS = 2.0
#: Longest delay between retries of a failed task.
RETRY_DELAY_CAP = 60.0


async def run_job(ctx: NodeContext, acker: Acker, held: HeldClaim, slot: Slot) -> None:
    """Parse the item, ``start`` it, then ack, open, retry or dead-letter it."""
    queue = held.queue
    provider = queue.provider
    try:
        try:
            task_id, payload = parse_item(held.claimed.raw, provider)
        except MalformedItem as exc:
            await dead_letter(ctx, held, str(exc))
            return
        job = Job(
            provider=provider,
            task_id=task_id,
            claim_id=held.claimed.claim_id,
            raw=held.claimed.raw,
            payload=payload,
            node=ctx.node,
            attempts=held.claimed.attempts,
        )
        held.job = job
        ctx.pool.mark_busy(slot, task_id)
        if ctx.show_registry is not None:  # the task is listed before it becomes running
            await ctx.show_registry(slot)
        try:
            outcome = await ctx.handler.start(job)
        except PermanentJobError as exc:
            await dead_letter(ctx, held, exc.reason)
            return
        except Exception as exc:
            ctx.metrics.failures[provider] += 1
            log.exception("task failed", extra={"provider": provider, "task_id": task_id})
            schedule_retry(ctx, held, f"{type(exc).__name__}: {exc}")
            return
        if outcome is JobStart.DROPPED:
            ctx.metrics.dropped[provider] += 1
            await finish(ctx, acker, held)
        elif outcome is JobStart.DONE:
            await finish(ctx, acker, held)
        else:
            await open_job(ctx, acker, held)
    finally:
        ctx.metrics.in_flight[provider] -= 1
        ctx.pool.release(slot)


async def while_held(
    ctx: NodeContext, held: HeldClaim, transition: Callable[[], Awaitable[T]]
) -> T | None:
    """Run a fenced transition, retrying Redis errors while the claim may still be ours.

    A failover or a Cluster slot move makes Redis unreachable for seconds; giving up would
    strand the claim in the node's table (renewed forever, never finished). None when
    the lease was lost meanwhile (renewal dropped the claim): the item runs again elsewhere.
    """
    delay = 0.2
    while True:
        try:
            return await transition()
        except REDIS_ERRORS as exc:
            ctx.health.failed("redis", exc)
            if ctx.claims.get(held.claimed.claim_id) is not held:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def finish(ctx: NodeContext, acker: Acker, held: HeldClaim) -> None:
    """Acknowledge the claim, retrying Redis errors while the lease may still be ours."""
    provider = held.queue.provider
    acked = await while_held(ctx, held, lambda: acker.ack(held.queue, held.claimed))
    if acked is None:
        return  # lease lost meanwhile: the item will run again elsewhere
    ctx.drop_claim(held)
    if acked:
        ctx.metrics.completions[provider] += 1
    else:
        ctx.metrics.lease_losses[provider] += 1
        task_id = held.job.task_id if held.job else None
        log.warning("ack refused: lease was lost", extra={"provider": provider, "task_id": task_id})


async def dead_letter(ctx: NodeContext, held: HeldClaim, reason: str) -> None:
    provider = held.queue.provider
    task_id = held.job.task_id if held.job else None
    log.error("dead-lettered: %s", reason, extra={"provider": provider, "task_id": task_id})
    if await while_held(ctx, held, lambda: held.queue.dead_letter(held.claimed, reason)):
        ctx.metrics.dead_letters[provider] += 1
    ctx.drop_claim(held)


def schedule_retry(ctx: NodeContext, held: HeldClaim, reason: str) -> None:
    """Hold the claim (lease renewed, no slot used) for a backoff, then requeue it at the head."""
    held.failure = reason
    delay = min(RETRY_DELAY_CAP, ctx.settings.kg_retry_delay * 2**held.claimed.attempts)
    task = ctx.spawn(_retry_later(ctx, held, delay), work=False, name="retry")
    held.tasks.add(task)


async def _retry_later(ctx: NodeContext, held: HeldClaim, delay: float) -> None:
    await asyncio.sleep(delay)
    await requeue(ctx, held)


async def requeue(ctx: NodeContext, held: HeldClaim) -> None:
    """Put a claim back at its queue head; a failed one counts an attempt (maybe → DLQ)."""
    provider = held.queue.provider
    failed = held.failure is not None
    result = await while_held(
        ctx,
        held,
        lambda: held.queue.release(
            held.claimed, count_attempt=failed, reason=held.failure or "released"
        ),
    )
    ctx.drop_claim(held)
    if result is ReleaseOutcome.DEAD_LETTERED:
        ctx.metrics.dead_letters[provider] += 1
    elif result is ReleaseOutcome.REQUEUED and failed:
        ctx.metrics.retries[provider] += 1
    elif result is ReleaseOutcome.REQUEUED:
        ctx.metrics.released[provider] += 1


async def open_job(ctx: NodeContext, acker: Acker, held: HeldClaim) -> None:
    """List the job as open to the fleet and keep its claim until ``is_complete``."""
    assert held.job is not None
    job = held.job
    if not await while_held(ctx, held, lambda: held.queue.open(held.claimed, job.task_id)):
        ctx.drop_claim(held)
        ctx.metrics.lease_losses[held.queue.provider] += 1
        return
    held.is_open = True
    task = ctx.spawn(_keep_open(ctx, acker, held), work=False, name="open-job")
    held.tasks.add(task)
    ctx.pool.notify()


async def _keep_open(ctx: NodeContext, acker: Acker, held: HeldClaim) -> None:
    """Ask ``is_complete`` at once (a book taken over from a dead node has its chapter
    claims returned by that call), then after each unit or every ``OPEN_CHECK_SECONDS``."""
    assert held.job is not None
    first = True
    while True:
        if not first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(held.unit_done.wait(), OPEN_CHECK_SECONDS)
        first = False
        held.unit_done.clear()
        try:
            complete = await ctx.handler.is_complete(held.job)
        except Exception:
            log.exception(
                "is_complete failed",
                extra={"provider": held.job.provider, "task_id": held.job.task_id},
            )
            continue
        if complete:
            await finish(ctx, acker, held)
            return


async def run_unit(
    ctx: NodeContext, held: HeldUnit, slot: Slot, cooldown: dict[str, float]
) -> None:
    """Run one unit; a failure releases it and rests the job here for a moment."""
    job, unit = held.job, held.unit
    extra = {"provider": job.provider, "task_id": job.task_id}
    try:
        await ctx.handler.run_unit(job, unit)
        ctx.metrics.units_done[job.provider] += 1
    except Exception:
        ctx.metrics.failures[job.provider] += 1
        log.exception("unit %s failed: releasing it", unit.key, extra=extra)
        cooldown[job.claim_id] = time.monotonic() + ctx.settings.kg_retry_delay
        try:
            await ctx.handler.release_unit(job, unit)
        except Exception:
            log.exception("releasing unit %s failed", unit.key, extra=extra)
    finally:
        if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
            _forget_unit(ctx, held, job)
        ctx.metrics.in_flight[job.provider] -= 1
        ctx.pool.release(slot)


def _forget_unit(ctx: NodeContext, held: HeldUnit, job: Job) -> None:
    if ctx.units.get(held.unit.key) is held:
        del ctx.units[held.unit.key]
    local = ctx.claims.get(job.claim_id)
    if local is not None:
        local.unit_done.set()
