"""Removing kgworker's own rows of tasks that chaishu deleted.

chaishu deletes a task by removing its task and chapter rows (docs/chaishu-compat.md §7)
without knowing our tables. Our rows about it — chapter claims, runs and pending entries,
task moves, task queue records, and the alias table of a novel that has no task left —
would stay forever, so a fleet duty removes them. LLM call records stay: they are the bill.
"""

from __future__ import annotations

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.store.schema.chaishu import KnowledgeGraphTask
from kgworker.store.schema.ours import (
    ChapterClaim,
    ChapterRun,
    EntityAlias,
    PendingChapter,
    TaskMove,
    TaskQueue,
)

T = KnowledgeGraphTask


async def remove_orphans(engine: AsyncEngine) -> dict[str, int]:
    """Delete our rows of tasks (and novels) that no longer exist; counts by table."""
    removed: dict[str, int] = {}
    async with engine.begin() as conn:
        for table in (ChapterClaim, ChapterRun, PendingChapter, TaskMove, TaskQueue):
            gone = ~exists(select(T.id).where(T.id == table.task_id))
            result = await conn.execute(delete(table).where(gone))
            removed[table.__tablename__] = int(result.rowcount or 0)
        unused = ~exists(select(T.id).where(T.novel_id == EntityAlias.novel_id))
        result = await conn.execute(delete(EntityAlias).where(unused))
        removed[EntityAlias.__tablename__] = int(result.rowcount or 0)
    return {table: count for table, count in removed.items() if count}
