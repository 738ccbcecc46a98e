"""``kgworker_task_queues``: the queue each task was seen on, for reconciliation.

After Redis loses its data a task's only trace may be its MySQL rows; the chaishu task row
has no provider column, so this table says which queue to push it back on (and fallback
updates it when it moves a task on purpose).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import TaskStatus
from kgworker.store.dialect import upsert
from kgworker.store.schema.chaishu import KnowledgeGraphTask
from kgworker.store.schema.ours import TaskQueue

T = KnowledgeGraphTask
Q = TaskQueue


async def record(engine: AsyncEngine, sightings: Iterable[tuple[int, str]]) -> None:
    """Remember that each (task id, provider) was seen queued now (the last one wins)."""
    rows = [{"task_id": task_id, "provider": provider.lower()} for task_id, provider in
            dict(sightings).items()]
    if not rows:
        return
    now = chaishu_now()
    async with engine.begin() as conn:
        for row in rows:
            values = {**row, "first_seen_at": now, "last_seen_at": now}
            await conn.execute(upsert(conn, Q, values, keys=("task_id",), update=lambda new: {
                "provider": new.provider, "last_seen_at": new.last_seen_at}))


async def provider_of(engine: AsyncEngine, task_id: int) -> str | None:
    async with engine.connect() as conn:
        value = await conn.scalar(select(Q.provider).where(Q.task_id == task_id))
    return None if value is None else str(value)


async def unfinished(engine: AsyncEngine, settled_before: datetime) -> list[tuple[int, str]]:
    """(task id, provider) of seen tasks that still want a worker: ``created`` or
    ``running``, untouched since ``settled_before`` (a restart being queued is left be)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Q.task_id, Q.provider).join(T, T.id == Q.task_id)
            .where(T.status.in_((TaskStatus.CREATED, TaskStatus.RUNNING)),
                   (T.updated_at.is_(None)) | (T.updated_at < settled_before))
            .order_by(Q.task_id)
        )
        return [(int(task), str(provider)) for task, provider in rows]
