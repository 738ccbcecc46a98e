"""Reads and inserts of chaishu's catalogue rows that operator actions need.

Provider names, novels and new task rows, as the chaishu application itself would write
them (a new task is ``created`` and covers every chapter of its novel).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import TaskStatus
from kgworker.store.schema.chaishu import AIProvider, Chapter, KnowledgeGraphTask, Novel


async def provider_names(engine: AsyncEngine) -> set[str]:
    """Names in ``ai_providers``, lower-cased (active or not)."""
    async with engine.connect() as conn:
        names = (await conn.execute(select(AIProvider.name))).scalars().all()
    return {str(n).lower() for n in names}


async def active_provider_names(engine: AsyncEngine) -> list[str]:
    """Names of the active ``ai_providers`` rows, lower-cased, in id order."""
    async with engine.connect() as conn:
        names = (await conn.execute(
            select(AIProvider.name).where(AIProvider.is_active.is_(True)).order_by(AIProvider.id)
        )).scalars().all()
    return [str(n).lower() for n in names]


async def novel_summary(engine: AsyncEngine, novel_id: int) -> tuple[str, bool] | None:
    """``(title, has chapters)`` of a novel, or None when it does not exist."""
    async with engine.connect() as conn:
        title = await conn.scalar(select(Novel.title).where(Novel.id == novel_id))
        if title is None:
            return None
        chapter = await conn.scalar(
            select(Chapter.id).where(Chapter.novel_id == novel_id).limit(1)
        )
    return str(title), chapter is not None


async def insert_task(engine: AsyncEngine, novel_id: int, title: str, *, use_ai: bool) -> int:
    """A ``created`` task over every chapter of ``novel_id``; its id."""
    now = chaishu_now()
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(KnowledgeGraphTask).values(
                task_name=f"{title} knowledge graph", novel_id=novel_id, chapter_ids=None,
                use_ai=use_ai, status=TaskStatus.CREATED, created_at=now, updated_at=now,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


async def task_row(engine: AsyncEngine, task_id: int) -> Row[Any] | None:
    """The whole task row, or None."""
    async with engine.connect() as conn:
        return (await conn.execute(
            select(KnowledgeGraphTask).where(KnowledgeGraphTask.id == task_id)
        )).first()
