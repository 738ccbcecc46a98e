"""Group commit for the chapter rows: completed chapters of one task that finish together on
this node are committed in one MySQL transaction.

Why: every chapter commit takes the task row lock (its counters), so the chapters of a book
take turns on it, each for the whole round trips of its transaction. In one group the lock
is taken once, the claim rows are locked and cleared in one statement each, the run rows are
written in one multi-row upsert, the counters are added once and the transaction commits
once; only the chaishu chapter row is updated per chapter (its own counts).

What does not change (:func:`kgworker.store.chapters.finish_chapter` is the one-chapter form
and the fallback of a failed group): a chapter completes only while its claim token is
still the one it was claimed with (fencing), and only from ``running``; a chapter that lost
its claim comes back ``lost`` and is left to its new holder; the counters move by exactly
the chapters moved. Failed chapters are committed one by one (they are rare and carry
their own error on the task row).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import ChapterStatus
from kgworker.store.chapters import CL, CS, ChapterClaimed, Finished, finish_chapter
from kgworker.store.dialect import upsert_rows
from kgworker.store.groups import GroupStats, KeyedGroups
from kgworker.store.schema.ours import ChapterRun
from kgworker.store.tasks import count_finished, lock_task
from kgworker.store.txn import in_transaction, read_committed

#: Chapters per transaction at most (bounds the row locks held and a retry's cost).
MAX_GROUP = 32


@dataclass(frozen=True, slots=True)
class Completed:
    """A chapter whose graph is written, to be committed as completed."""

    claim: ChapterClaimed
    entities: int
    relations: int
    run: dict[str, Any] | None


async def finish_completed(
    engine: AsyncEngine, task_id: int, chapters: Sequence[Completed]
) -> list[Finished]:
    """Commit chapters of one task as completed, in one transaction; one result each.

    The task's progress (and its final status, when this group finished it) comes back on
    the last chapter committed; the others carry none, so it is published once per group.
    """

    async def work(conn: AsyncConnection) -> list[Finished]:
        task = await lock_task(conn, task_id)
        if task is None:
            return [Finished(lost=True) for _ in chapters]
        ids = [c.claim.chapter_id for c in chapters]
        tokens = {int(chapter_id): token for chapter_id, token in await conn.execute(
            select(CL.chapter_id, CL.token)
            .where(CL.task_id == task_id, CL.chapter_id.in_(ids)).with_for_update()
        )}
        ours = [c for c in chapters if tokens.get(c.claim.chapter_id) == c.claim.token]
        now = chaishu_now()
        moved: set[int] = set()
        for chapter in ours:
            result = await conn.execute(
                update(CS)
                .where(CS.kg_task_id == task_id, CS.chapter_id == chapter.claim.chapter_id,
                       CS.status == ChapterStatus.RUNNING)
                .values(status=ChapterStatus.COMPLETED, entities_extracted=chapter.entities,
                        relations_extracted=chapter.relations, error_message=None,
                        completed_at=now, updated_at=now)
            )
            if result.rowcount:
                moved.add(chapter.claim.chapter_id)
        if ours:  # as finish_chapter: no stamp, so a later reset counts attempts anew
            await conn.execute(
                update(CL)
                .where(CL.task_id == task_id,
                       CL.chapter_id.in_([c.claim.chapter_id for c in ours]))
                .values(token=None, owner=None, lease_until=None, last_error=None,
                        row_updated_at=None)
            )
        done = [c for c in ours if c.claim.chapter_id in moved]
        if not done:
            return [Finished(lost=True) for _ in chapters]
        await _store_runs(conn, done)
        progress = await count_finished(
            conn, task, completed=len(done), entities=sum(c.entities for c in done),
            relations=sum(c.relations for c in done))
        finalised = progress.status if progress.status != task.status else None
        last = done[-1].claim.chapter_id
        return [
            Finished(lost=True) if c.claim.chapter_id not in moved
            else Finished(lost=False, progress=progress, finalised=finalised)
            if c.claim.chapter_id == last else Finished(lost=False)
            for c in chapters
        ]

    return await in_transaction(read_committed(engine), work)


async def _store_runs(conn: AsyncConnection, done: Sequence[Completed]) -> None:
    """The run rows, one upsert per shape of ``run`` (they all have one shape in practice)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for c in done:
        if c.run is None:
            continue
        claim = c.claim
        values = {"task_id": claim.task_id, "chapter_id": claim.chapter_id,
                  "owner": claim.owner, "status": ChapterStatus.COMPLETED,
                  "attempts": claim.attempts, "entities": c.entities,
                  "relations": c.relations, **c.run}
        shapes.setdefault(tuple(values), []).append(values)
    for columns, rows in shapes.items():
        await upsert_rows(conn, ChapterRun, rows, keys=("task_id", "chapter_id"),
                          update=functools.partial(_new_values, columns))


def _new_values(columns: Sequence[str], new: Any) -> dict[str, Any]:
    return {k: new[k] for k in columns if k not in ("task_id", "chapter_id")}


class FinishGroups:
    """The node's chapter commits, grouped per task (:class:`KeyedGroups`)."""

    def __init__(self, engine: AsyncEngine, *, max_group: int = MAX_GROUP) -> None:
        self.engine = engine
        self._groups: KeyedGroups[int, Completed, Finished] = KeyedGroups(
            lambda task_id, chapters: finish_completed(engine, task_id, chapters),
            self._one, max_group=max_group, name="finish",
        )

    @property
    def stats(self) -> GroupStats:
        return self._groups.stats

    async def completed(self, chapter: Completed) -> Finished:
        """Commit one completed chapter, with whichever of its task's chapters wait too."""
        return await self._groups.submit(chapter.claim.task_id, chapter)

    async def _one(self, task_id: int, chapter: Completed) -> Finished:
        del task_id
        return await finish_chapter(self.engine, chapter.claim, entities=chapter.entities,
                                    relations=chapter.relations, run=chapter.run)
