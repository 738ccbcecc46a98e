"""The old guard: zombie tasks and workers of deactivated providers.

A task ``running`` that no live ``kg:worker:<pid>`` entry shows is taken for a zombie,
whatever else may be working on it: that is exactly the hazard for kgworker, whose slots
the old reader cannot see. Chapter rows are never touched, so a zombie's ``running``
chapter rows stay ``running`` after the reset. Reset tasks are not re-queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .codec import RULES, local_now
from .resets import choose_provider, requeue
from .status import LegacyStatus, read_worker_status


@dataclass
class GuardResult:
    """What one guard pass did, so a test can assert that it did nothing."""

    status: LegacyStatus
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    reset: list[int] = field(default_factory=list)
    #: worker keys deleted because their provider is no longer active
    dropped_workers: list[str] = field(default_factory=list)
    #: (task id, provider) items re-queued for those workers' tasks
    requeued: list[tuple[int, str]] = field(default_factory=list)

    @property
    def touched_tasks(self) -> list[int]:
        return sorted({*self.completed, *self.failed, *self.reset,
                       *(task for task, _ in self.requeued)})


async def _chapter_counts(conn: AsyncConnection, task_id: int) -> dict[str, int]:
    rows = await conn.execute(text(
        "SELECT status, COUNT(*) FROM knowledge_graph_chapter_status "
        "WHERE kg_task_id = :id GROUP BY status"
    ), {"id": task_id})
    return {str(status): int(count) for status, count in rows}


async def _settle_zombie(conn: AsyncConnection, task_id: int, result: GuardResult) -> None:
    counts = await _chapter_counts(conn, task_id)
    total = sum(counts.values())
    done = counts.get("completed", 0)
    failed = counts.get("failed", 0)
    now = local_now()
    params = {"id": task_id, "now": now, "done": done, "failed": failed}
    if total and done == total:
        sql = ("UPDATE knowledge_graph_tasks SET status = 'completed', completed_chapters = "
               ":done, completed_at = :now, updated_at = :now")
        bucket = result.completed
    elif failed:
        sql = ("UPDATE knowledge_graph_tasks SET status = 'failed', completed_chapters = "
               ":done, failed_chapters = :failed, failed_at = :now, updated_at = :now")
        bucket = result.failed
    else:
        sql = "UPDATE knowledge_graph_tasks SET status = 'created', updated_at = :now"
        bucket = result.reset
    changed = await conn.execute(text(sql + " WHERE id = :id AND status = 'running'"), params)
    if changed.rowcount:
        bucket.append(task_id)


async def _drop_inactive(engine: AsyncEngine, redis: Any, result: GuardResult) -> None:
    async with engine.connect() as conn:
        active = {
            str(name).lower()
            for (name,) in await conn.execute(
                text("SELECT name FROM ai_providers WHERE is_active = 1")
            )
        } | {RULES}
    for entry in result.status.workers:
        if entry.provider is None or entry.provider.lower() in active:
            continue
        await redis.delete(entry.key)
        result.dropped_workers.append(entry.key)
        if entry.task_id is None:
            continue
        async with engine.connect() as conn:
            use_ai = (await conn.execute(
                text("SELECT use_ai FROM knowledge_graph_tasks WHERE id = :id"),
                {"id": entry.task_id},
            )).scalar()
            if use_ai is None:
                continue
            try:
                target = await choose_provider(conn, bool(use_ai), exclude=[entry.provider])
            except LookupError:
                continue
        await requeue(redis, entry.task_id, target)
        result.requeued.append((entry.task_id, target))


async def guard_once(
    engine: AsyncEngine, redis: Any, *, status: LegacyStatus | None = None
) -> GuardResult:
    """One guard pass. Reads the worker status first (deleting dead keys, as the old
    reader does) unless a fresh ``status`` is given."""
    if status is None:
        status = await read_worker_status(redis)
    result = GuardResult(status=status)
    live = set(status.active_tasks)
    async with engine.connect() as conn:
        running = [int(task_id) for (task_id,) in await conn.execute(
            text("SELECT id FROM knowledge_graph_tasks WHERE status = 'running' ORDER BY id")
        )]
    for task_id in running:
        if task_id in live:
            continue
        async with engine.begin() as conn:
            await _settle_zombie(conn, task_id, result)
    await _drop_inactive(engine, redis, result)
    return result
