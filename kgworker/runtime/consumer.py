"""One consumer per provider: it claims only while it holds free slots, and never polls.

Order of work when a slot is free: units of open jobs (the provider's books already being
worked, on this node or any other, in turn; up to ``UNIT_BATCH`` in one call from a
handler that claims in batches), then a batch pop of the queue (one round trip claims
as many items as there are free slots), then one blocking ``BLMOVE`` of at most
``KG_CLAIM_BLOCK_SECONDS`` so that pause, stop and new open jobs are noticed quickly. A
node has one blocked connection per provider, never one per slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from kgworker.queue.connection import REDIS_ERRORS
from kgworker.queue.provider_queue import Claimed, MalformedItem, parse_item
from kgworker.runtime.context import HeldClaim, HeldUnit, NodeContext
from kgworker.runtime.execution import requeue, run_job, run_unit
from kgworker.runtime.handler import ClaimsInBatches, Job, Unit
from kgworker.runtime.leases import Acker
from kgworker.runtime.slots import Slot

log = logging.getLogger(__name__)

#: The fleet's open jobs are re-read at most this often (seconds).
OPEN_REFRESH_SECONDS = 1.0
#: Longest wait between claim attempts while Redis fails (0.1 s doubling): the end of a
#: failover is noticed within this much, for one cheap failed attempt per provider a second.
BACKOFF_CAP = 1.0
#: Units of one open job claimed in one call at most (handlers that claim in batches):
#: enough that a node's claim rate is not its ceiling, few enough to stay fair to books.
UNIT_BATCH = 8


class ProviderConsumer:
    """Claims work of one provider into free slots until the node stops or drains it."""

    def __init__(self, ctx: NodeContext, acker: Acker, provider: str) -> None:
        self.ctx = ctx
        self.acker = acker
        self.provider = provider
        self.queue = ctx.queue(provider)
        self.draining = False
        self.cooldown: dict[str, float] = {}
        self._remote: list[Job] = []
        self._remote_read_at = 0.0
        self._exhausted: set[str] = set()
        #: The handler's ``claim_units`` when it claims several units in one call.
        self._claim_batch = (ctx.handler.claim_units
                             if isinstance(ctx.handler, ClaimsInBatches) else None)
        #: Where the next unit claim starts in the list of open jobs (books share the slots).
        self._turn = 0

    @property
    def block_seconds(self) -> float:
        return self.ctx.settings.kg_claim_block_seconds

    async def run(self) -> None:
        """The consumer loop; Redis errors back off here, other errors crash to the supervisor."""
        ctx = self.ctx
        ctx.pool.add_provider(self.provider)
        backoff = 0.1
        while not ctx.stopping.is_set() and not self.draining:
            resumed = ctx.resumed[self.provider]
            if not resumed.is_set():
                await _wait_event(resumed, self.block_seconds)
                continue
            if ctx.pool.free(self.provider) == 0:
                await ctx.pool.wait_changed(self.block_seconds)
                continue
            try:
                if ctx.has_units and await self._try_units():
                    continue
                if ctx.health.blocking() is not None:  # no new book while a store is out
                    await ctx.pool.wait_changed(self.block_seconds)
                    continue
                await self._claim_from_queue()
            except REDIS_ERRORS as exc:
                ctx.health.failed("redis", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
            else:
                backoff = 0.1

    # --- queue items -----------------------------------------------------------------
    async def _claim_from_queue(self) -> None:
        slots = self.ctx.pool.acquire(self.provider, self.ctx.pool.free(self.provider))
        used = 0
        try:
            claimed = await self.queue.claim(len(slots))
            self.ctx.health.ok("redis")
            if not claimed:
                for slot in slots[1:]:
                    self.ctx.pool.release(slot)
                slots = slots[:1]
                raw = await self.queue.wait(self.block_seconds)
                one = None if raw is None else await self.queue.claim_active(raw)
                claimed = [] if one is None else [one]
            for item, slot in zip(claimed, slots, strict=False):
                self._start_job(item, slot)
                used += 1
        finally:
            for slot in slots[used:]:
                self.ctx.pool.release(slot)

    def _start_job(self, claimed: Claimed, slot: Slot) -> None:
        ctx = self.ctx
        held = HeldClaim(self.queue, claimed)
        ctx.claims[claimed.claim_id] = held
        ctx.metrics.claims[self.provider] += 1
        if ctx.stopping.is_set() or self.draining:  # claimed while stopping: give it back
            ctx.pool.release(slot)
            held.tasks.add(ctx.spawn(requeue(ctx, held), work=False, name="give-back"))
            return
        ctx.metrics.in_flight[self.provider] += 1
        task = ctx.spawn(run_job(ctx, self.acker, held, slot), work=True, name="job")
        held.tasks.add(task)

    # --- units of open jobs ------------------------------------------------------------
    async def _try_units(self) -> bool:
        """Claim units of an open job into free slots (up to ``UNIT_BATCH`` in one call when
        the handler claims in batches); False when none is available."""
        ctx = self.ctx
        now = time.monotonic()
        if now - self._remote_read_at >= OPEN_REFRESH_SECONDS:
            self._remote = self._decode_open(await self.queue.open_jobs())
            self._remote_read_at = now
            self._exhausted.clear()
        local = [
            h.job
            for h in ctx.claims.values()
            if h.is_open and h.job is not None and h.queue.provider == self.provider
        ]
        jobs = local + self._remote
        start = self._turn % len(jobs) if jobs else 0
        for job in jobs[start:] + jobs[:start]:  # round-robin: each claim starts one job on
            if job.claim_id in self._exhausted or self.cooldown.get(job.claim_id, 0) > now:
                continue
            slots = ctx.pool.acquire(self.provider, UNIT_BATCH if self._claim_batch else 1)
            if not slots:
                return True
            try:
                units = await self._claim_units(job, len(slots))
            except BaseException:
                for slot in slots:
                    ctx.pool.release(slot)
                raise
            for slot in slots[len(units):]:
                ctx.pool.release(slot)
            if not units:
                self._exhausted.add(job.claim_id)
                continue
            self._turn += 1
            for unit, slot in zip(units, slots, strict=False):
                held = HeldUnit(job, unit)
                ctx.units[unit.key] = held
                ctx.pool.mark_busy(slot, job.task_id)
                ctx.metrics.in_flight[self.provider] += 1
                held.task = ctx.spawn(
                    run_unit(ctx, held, slot, self.cooldown), work=True, name="unit"
                )
            return True
        return False

    async def _claim_units(self, job: Job, limit: int) -> list[Unit]:
        ctx = self.ctx
        if self._claim_batch is not None:
            return await self._claim_batch(job, ctx.owner, ctx.lease_seconds, limit)
        unit = await ctx.handler.claim_unit(job, ctx.owner, ctx.lease_seconds)
        return [] if unit is None else [unit]

    def _decode_open(self, entries: dict[str, dict[str, object]]) -> list[Job]:
        jobs: list[Job] = []
        for claim_id, entry in entries.items():
            if claim_id in self.ctx.claims:
                continue  # ours: already in the local list
            raw_text = entry.get("raw")
            if not isinstance(raw_text, str):
                continue
            raw = raw_text.encode("utf-8")
            try:
                task_id, payload = parse_item(raw, self.provider)
            except MalformedItem:
                continue
            attempts = entry.get("attempts", 0)
            jobs.append(
                Job(
                    provider=self.provider,
                    task_id=task_id,
                    claim_id=claim_id,
                    raw=raw,
                    payload=payload,
                    node=str(entry.get("node", "")),
                    attempts=attempts if isinstance(attempts, int) else 0,
                )
            )
        return jobs


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
