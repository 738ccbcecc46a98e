"""Reconciliation from the durable side: rebuild lost queue items from MySQL.

Redis without persistence (or a failover that lost writes) can come back empty: a task
that was queued and not started then has no trace but its rows, and a running task no
claim. This duty compares the two sides. A task kgworker has seen queued
(``kgworker_task_queues``), still ``created`` or ``running``, not held by an old chaishu
worker, and found nowhere in its provider's queue, active list, claims or open jobs is
pushed back on the queue it was seen on — never on another provider's (fallback records a
move on purpose). The check and the push are one Lua script (``reconcile.lua``), so a task
another node is claiming at that moment is never queued twice; a task that was just reset
(a restart pushing its item) is left alone for a few seconds. Paused, cancelled, finished
and deleted tasks are never resurrected, and a ``created`` task that was never pushed is
the application's business, not ours.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.queue.connection import RedisClient
from kgworker.queue.old_workers import old_worker_tasks
from kgworker.queue.producer import task_item
from kgworker.queue.provider_queue import push_missing, queue_providers, queued_task_ids
from kgworker.store import task_queues

log = logging.getLogger(__name__)

#: A task touched this recently may be on its way into a queue (a restart, a retry).
SETTLE_SECONDS = 5.0


class Reconciler:
    """Keeps ``kgworker_task_queues`` current and pushes back what Redis lost."""

    def __init__(self) -> None:
        self.recorded: dict[int, str] = {}  #: sightings already written (task → provider)

    async def record_queued(self, engine: AsyncEngine, redis: RedisClient) -> int:
        """Record every task waiting in a queue (a queued task's only trace may be here)."""
        new: dict[int, str] = {}
        for provider in await queue_providers(redis):
            for task_id in await queued_task_ids(redis, provider):
                if self.recorded.get(task_id) != provider:
                    new[task_id] = provider
        if new:
            await task_queues.record(engine, new.items())
            self.recorded.update(new)
        return len(new)

    async def push_back(self, engine: AsyncEngine, redis: RedisClient) -> dict[str, list[int]]:
        """Push the items of seen, unfinished tasks that are nowhere in Redis.

        Redis is asked first which are missing, MySQL then whether they still want a
        worker, and the push checks Redis again in the same script: a task that finished
        and was acknowledged meanwhile was ``completed`` before its claim went, so it is
        never pushed back.
        """
        missing: dict[str, dict[int, str]] = {}
        for provider, items in (await self._wanted(engine, redis)).items():
            found = await push_missing(redis, provider, items, push=False)
            if found:
                missing[provider] = {task: items[task] for task in found}
        if not missing:
            return {}
        still = await self._wanted(engine, redis)
        pushed: dict[str, list[int]] = {}
        for provider, items in missing.items():
            confirmed = {t: i for t, i in items.items() if t in still.get(provider, {})}
            done = await push_missing(redis, provider, confirmed)
            if done:
                pushed[provider] = done
                log.warning("reconciled: %d task(s) missing from Redis pushed back: %s",
                            len(done), ", ".join(map(str, done)), extra={"provider": provider})
        return pushed

    async def _wanted(self, engine: AsyncEngine, redis: RedisClient) -> dict[str, dict[int, str]]:
        """Provider → (task → item) of seen, unfinished, settled tasks no old worker holds."""
        settled = chaishu_now() - timedelta(seconds=SETTLE_SECONDS)
        wanted = await task_queues.unfinished(engine, settled)
        if not wanted:
            return {}
        elsewhere = await old_worker_tasks(redis)
        by_provider: dict[str, dict[int, str]] = {}
        for task_id, provider in wanted:
            if task_id not in elsewhere:
                by_provider.setdefault(provider, {})[task_id] = task_item(task_id, provider)
        return by_provider
