"""Removing kgworker's own rows of tasks that chaishu deleted.

chaishu deletes a task by removing its task and chapter rows (docs/chaishu-compat.md §7)
without knowing our tables. Our rows about it — chapter claims, runs and pending entries,
task moves, task queue records, and the alias table of a novel that has no task left —
would stay forever, so a fleet duty removes them. LLM call records stay: they are the bill.

Each table is cleaned in two steps: a plain (non-locking) read finds the ids that are gone,
then a DELETE by those ids (each table's index starts with its task or novel id) removes
their rows, re-checking that they are still gone. Why: a single ``DELETE … WHERE NOT
EXISTS`` scans the whole table and locks each row it looks at, so it took turns with (and
deadlocked against) the nodes claiming and finishing chapters of live tasks.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

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
            removed[table.__tablename__] = await _delete_gone(conn, table.task_id, gone)
        unused = ~exists(select(T.id).where(T.novel_id == EntityAlias.novel_id))
        removed[EntityAlias.__tablename__] = await _delete_gone(conn, EntityAlias.novel_id,
                                                                unused)
    return {table: count for table, count in removed.items() if count}


async def _delete_gone(
    conn: AsyncConnection, key: InstrumentedAttribute[int], gone: ColumnElement[bool]
) -> int:
    """Rows whose ``key`` is gone: found without locks, deleted by key (still gone)."""
    ids = list((await conn.execute(select(key).distinct().where(gone))).scalars())
    if not ids:
        return 0
    result = await conn.execute(delete(key.class_).where(key.in_(ids), gone))
    return int(result.rowcount or 0)
