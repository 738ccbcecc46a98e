"""Fleet-wide background duties, run by one node at a time under a Redis lock with a TTL.

* **Auto-retry** (moved here from the chaishu app): failed tasks whose
  ``retry_scheduled_at`` has come are reset and re-queued (:func:`retry_due_tasks`).
* **Fallback**: waiting items of a suspended provider move to its first healthy backup
  when the operator enabled it (:mod:`kgworker.chaishu.fallback`).
* **Recovery**: chapters left ``running`` under an expired lease of ours go back to
  ``pending``; a ``running`` row with no claim of ours belongs to an old chaishu worker
  until that worker is gone (its task has no live old-worker entry and the row has been
  idle for ``KG_RECOVERY_GRACE``). A ``running`` task with pending chapters, no live claim,
  not open on any node, not held by an old worker and idle for ``KG_RECOVERY_GRACE`` is
  re-queued — its queue item was lost (old worker, dead-lettered, acknowledged too early).
  A duplicate item is harmless: starting a running task joins it.
* **Audit**: finished tasks touched lately are recounted, so an old worker's late commit
  never leaves totals that disagree with the chapter rows.
* **Cleanup**: our rows of tasks chaishu deleted are removed (:mod:`kgworker.store.cleanup`).

Why a lock: the duties are idempotent, but two nodes re-queueing the same stale task at the
same moment would put two items in the queue for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.fallback import move_waiting
from kgworker.chaishu.owners import owners_now
from kgworker.chaishu.reconcile import Reconciler
from kgworker.config import Settings
from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import TaskStatus
from kgworker.keys import DUTIES_LOCK_KEY
from kgworker.queue import scripts
from kgworker.queue.connection import RedisClient
from kgworker.queue.old_workers import old_worker_tasks
from kgworker.queue.producer import push_task, task_item
from kgworker.queue.progress import publish_progress
from kgworker.queue.provider_queue import push_missing
from kgworker.store import task_queues, task_reset
from kgworker.store import tasks as task_store
from kgworker.store.chapters import ForeignRows, reap_expired
from kgworker.store.cleanup import remove_orphans
from kgworker.store.txn import read_committed

log = logging.getLogger(__name__)


async def retry_due_tasks(engine: AsyncEngine, redis: RedisClient) -> list[int]:
    """Auto-retry: failed tasks whose retry_scheduled_at has come are reset and re-queued."""
    retried: list[int] = []
    for task_id in await task_reset.due_retries(engine):
        provider = await task_reset.reset_for_retry(
            engine, task_id, statuses=(TaskStatus.FAILED,), scheduled=True
        )
        if provider is not None:
            await push_task(redis, task_id, provider)
            log.info("auto-retry re-queued task", extra={"task_id": task_id})
            retried.append(task_id)
    return retried


async def recover_stale_tasks(
    engine: AsyncEngine, redis: RedisClient, settings: Settings
) -> list[int]:
    """Reap expired chapter claims, finalise finished tasks, re-queue orphaned ones."""
    engine = read_committed(engine)
    idle_since = chaishu_now() - timedelta(seconds=settings.kg_recovery_grace)
    old_workers = await old_worker_tasks(redis)
    owners = await owners_now(engine, redis, settings)
    if owners is not None:
        await reap_expired(engine, max_attempts=settings.kg_chapter_max_attempts,
                           foreign=ForeignRows(idle_since, old_workers), owners=owners)
    requeued: list[int] = []
    for task_id in await task_store.stale_running_tasks(engine, idle_since):
        if task_id in old_workers:
            continue  # an old chaishu worker is on it: not ours to take
        finalised = await task_store.finalise_task(engine, task_id)
        if finalised is not None:
            await publish_progress(redis, settings.kg_progress_channel, finalised)
            continue
        provider = (await task_queues.provider_of(engine, task_id)
                    or await task_store.queue_provider_of(engine, task_id))
        if provider is None:
            continue
        if await push_missing(redis, provider, {task_id: task_item(task_id, provider)}):
            log.warning("running task had no live claim: re-queued",
                        extra={"task_id": task_id, "provider": provider})
            requeued.append(task_id)
    return requeued


async def run_duties_once(
    settings: Settings, redis: RedisClient, engine: AsyncEngine,
    reconciler: Reconciler | None = None,
) -> dict[str, list[int]]:
    """Every duty once, without the lock (tests, ``kgworker`` commands)."""
    reconciler = reconciler or Reconciler()
    await reconciler.record_queued(engine, redis)
    pushed = await reconciler.push_back(engine, redis)
    retried = await retry_due_tasks(read_committed(engine), redis)
    recovered = await recover_stale_tasks(engine, redis, settings)
    moved = await move_waiting(settings, redis, engine)
    window = max(settings.kg_recovery_grace, 3 * settings.kg_duty_interval)
    recounted = await task_store.audit_counters(
        read_committed(engine), chaishu_now() - timedelta(seconds=window))
    removed = await remove_orphans(engine)
    if removed:
        log.info("rows of deleted tasks removed: %s",
                 ", ".join(f"{table} {count}" for table, count in sorted(removed.items())))
    return {"retried": retried, "recovered": recovered, "moved": [m.task_id for m in moved],
            "recounted": recounted, "reconciled": sorted(t for ids in pushed.values() for t in ids)}


async def run_duties(
    settings: Settings, redis: RedisClient, engine: AsyncEngine, stop: asyncio.Event,
    wake: asyncio.Event | None = None,
) -> None:
    """Run the duties every ``KG_DUTY_INTERVAL`` seconds while this node holds the lock.

    Meant for the runtime's supervisor: returns when ``stop`` is set; an error in one
    round is logged and the next round runs as usual. ``wake`` (set when Redis was found
    to have lost its data) starts the next round at once: reconciliation should not wait.
    """
    reconciler = Reconciler()
    token = secrets.token_hex(16)
    interval = settings.kg_duty_interval
    ttl_ms = int(max(interval * 3, 5.0) * 1000)
    try:
        while not stop.is_set():
            try:
                held = await scripts.run(redis, "lock", [DUTIES_LOCK_KEY], [token, ttl_ms, "1"])
                if held:
                    await run_duties_once(settings, redis, engine, reconciler)
            except Exception:
                log.exception("pipeline duties failed; next round in %g s", interval)
            await _rest(stop, wake, interval)
    finally:
        with contextlib.suppress(Exception):
            await scripts.run(redis, "lock", [DUTIES_LOCK_KEY], [token, 0, "0"])


async def _rest(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Until the next round: ``seconds``, or sooner when ``stop`` or ``wake`` is set."""
    events = [stop] if wake is None else [stop, wake]
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    if wake is not None:
        wake.clear()
