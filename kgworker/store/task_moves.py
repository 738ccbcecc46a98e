"""``kgworker_task_moves``: when and why a waiting task moved to a backup provider.

Written by the provider fallback duty; read by ``kgworker status`` together with
``kgworker_chapter_runs``, which says which provider and model produced each chapter.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.status import ChapterStatus
from kgworker.store.schema.ours import ChapterRun, TaskMove


async def record_move(
    engine: AsyncEngine, task_id: int, from_provider: str, to_provider: str, reason: str,
    node: str,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(TaskMove).values(
            task_id=task_id, from_provider=from_provider, to_provider=to_provider,
            reason=reason[:255], node=node,
        ))


async def read_moves(engine: AsyncEngine, *, limit: int = 20) -> list[dict[str, Any]]:
    """Recent moves, each with its task's finished chapters counted by provider and model."""
    from kgworker.store.schema.ours import TaskMove

    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(TaskMove).order_by(TaskMove.id.desc()).limit(limit)
        )).all()
        task_ids = sorted({row.task_id for row in rows})
        produced: dict[int, dict[str, int]] = {}
        if task_ids:
            counts = await conn.execute(
                select(ChapterRun.task_id, ChapterRun.provider, ChapterRun.model, func.count())
                .where(ChapterRun.task_id.in_(task_ids),
                       ChapterRun.status == ChapterStatus.COMPLETED)
                .group_by(ChapterRun.task_id, ChapterRun.provider, ChapterRun.model)
            )
            for task_id, provider, model, count in counts:
                label = f"{provider or '?'}/{model}" if model else str(provider or "?")
                produced.setdefault(int(task_id), {})[label] = int(count)
    return [
        {
            "task_id": row.task_id,
            "from": row.from_provider,
            "to": row.to_provider,
            "reason": row.reason,
            "node": row.node,
            "moved_at": row.moved_at.isoformat() if row.moved_at else None,
            "chapters_by_producer": produced.get(row.task_id, {}),
        }
        for row in rows
    ]
