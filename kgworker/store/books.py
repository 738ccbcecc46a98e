"""What the handler reads about a book: a chapter with its novel, the default config.

Read only: chaishu owns these rows (docs/chaishu-compat.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphConfig, KnowledgeGraphTask, Novel


@dataclass(frozen=True, slots=True)
class ChapterSource:
    """One chapter of a task's novel, as the extractor and the graph writer need it."""

    novel_id: int
    chapter_id: int
    chapter_number: int
    title: str
    content: str
    word_count: int | None
    novel_title: str
    novel_author: str | None
    use_ai: bool


async def chapter_source(
    engine: AsyncEngine, task_id: int, chapter_id: int
) -> ChapterSource | None:
    """The chapter, when it exists and belongs to the task's novel; else None."""
    T = KnowledgeGraphTask
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(Chapter.title, Chapter.content, Chapter.chapter_number,
                   Chapter.word_count, Chapter.novel_id, Novel.title.label("novel_title"),
                   Novel.author, T.use_ai)
            .join(Novel, Novel.id == Chapter.novel_id, isouter=True)
            .join(T, and_(T.id == task_id, T.novel_id == Chapter.novel_id))
            .where(Chapter.id == chapter_id)
        )).first()
    if row is None:
        return None
    return ChapterSource(
        novel_id=int(row.novel_id), chapter_id=chapter_id,
        chapter_number=int(row.chapter_number), title=row.title or "",
        content=row.content or "", word_count=row.word_count,
        novel_title=row.novel_title or "", novel_author=row.author, use_ai=bool(row.use_ai),
    )


async def default_config(engine: AsyncEngine) -> KnowledgeGraphConfig | None:
    """The ``knowledge_graph_configs`` row with ``is_default = 1`` (lowest id), detached."""
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(KnowledgeGraphConfig).where(KnowledgeGraphConfig.is_default.is_(True))
            .order_by(KnowledgeGraphConfig.id).limit(1)
        )).first()
    return None if row is None else KnowledgeGraphConfig(**row._asdict())


async def novel_of_task(engine: AsyncEngine, task_id: int) -> int | None:
    async with engine.connect() as conn:
        novel_id = await conn.scalar(
            select(KnowledgeGraphTask.novel_id).where(KnowledgeGraphTask.id == task_id)
        )
    return None if novel_id is None else int(novel_id)
