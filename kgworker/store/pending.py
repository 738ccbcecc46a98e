"""The claim order of a task's pending chapters (``kgworker_pending_chapters``).

A claim takes the first pending chapters in chapter_number order (docs/chaishu-compat.md
§1). Read from chaishu's rows that means sorting every pending row of the task (a join to
``chapters`` for the number, then a filesort): per claim, the cost grows with the book.
Our table keys the chapters that may be pending by (task, chapter_number, chapter_id), so
the claim reads the first few entries of its primary key instead.

Entries are hints. The chapter row still decides a claim (its conditional UPDATE); an
entry whose row is no longer pending is deleted when a claim meets it. We add an entry
wherever we move a row back to pending (release, reap); a task's entries are seeded from
its chapter rows when a node starts or joins it (a chaishu restart or retry requeues the
task, so it passes there) and when a claim finds none — a row made pending from outside
while the task kept running (chaishu's startup recovery) is found then, at the latest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, and_, delete, exists, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from kgworker.domain.status import ChapterStatus
from kgworker.store.dialect import insert_ignore
from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphChapterStatus
from kgworker.store.schema.ours import ChapterClaim, PendingChapter

CS = KnowledgeGraphChapterStatus
CL = ChapterClaim
P = PendingChapter


def _insert_ignore() -> Insert:
    return cast(Insert, insert_ignore(P))


def candidates(
    task_id: int, window: int
) -> Select[int, int, str, datetime | None, str | None, int, datetime | None]:
    """The first ``window`` entries of the task in claim order, with their rows' state.

    No status filter: an entry whose row is not pending comes back too, so the claim can
    delete it instead of every later claim stepping over it.
    """
    return (
        select(P.chapter_id, P.chapter_number, CS.status, CS.updated_at, CL.token,
               CL.attempts, CL.row_updated_at)
        .join(CS, and_(CS.kg_task_id == P.task_id, CS.chapter_id == P.chapter_id))
        .outerjoin(CL, and_(CL.task_id == P.task_id, CL.chapter_id == P.chapter_id))
        .where(P.task_id == task_id)
        .order_by(P.chapter_number, P.chapter_id)
        .limit(window)
    )


async def seed(conn: AsyncConnection, task_id: int) -> int:
    """Add an entry for every pending chapter row of the task; how many were added."""
    rows = (
        select(literal(task_id), Chapter.chapter_number, CS.chapter_id)
        .join(Chapter, Chapter.id == CS.chapter_id)
        .where(CS.kg_task_id == task_id, CS.status == ChapterStatus.PENDING)
    )
    result = await conn.execute(
        _insert_ignore().from_select(["task_id", "chapter_number", "chapter_id"], rows)
    )
    return int(result.rowcount or 0)


async def add(conn: AsyncConnection, task_id: int, chapter_id: int,
              chapter_number: int | None = None) -> None:
    """A chapter row of the task went back to pending: give it its entry again."""
    if chapter_number is None:
        chapter_number = await conn.scalar(
            select(Chapter.chapter_number).where(Chapter.id == chapter_id))
        if chapter_number is None:
            return  # the chapter is gone: nothing to claim
    await conn.execute(_insert_ignore().values(
        task_id=task_id, chapter_number=chapter_number, chapter_id=chapter_id))


async def drop(conn: AsyncConnection, task_id: int, rows: Sequence[Any]) -> None:
    """The entries of ``rows`` (candidates just claimed), in one statement."""
    await conn.execute(delete(P).where(
        P.task_id == task_id, P.chapter_number.in_({int(r.chapter_number) for r in rows}),
        P.chapter_id.in_([int(r.chapter_id) for r in rows])))


async def drop_stale(conn: AsyncConnection, task_id: int, rows: Sequence[Any]) -> None:
    """The entries of ``rows`` (candidates whose chapter row was not pending), in one go.

    An entry goes only if its row is still not pending: it may have gone back to pending
    since the claim read it, and the entry is then the one it needs.
    """
    if not rows:
        return
    numbers = [int(r.chapter_number) for r in rows]
    await conn.execute(delete(P).where(
        P.task_id == task_id, P.chapter_number.between(min(numbers), max(numbers)),
        P.chapter_id.in_([int(r.chapter_id) for r in rows]),
        ~exists(select(CS.id).where(CS.kg_task_id == task_id, CS.chapter_id == P.chapter_id,
                                    CS.status == ChapterStatus.PENDING)),
    ))


def is_pending(row: Any) -> bool:
    return bool(row.status == ChapterStatus.PENDING)
