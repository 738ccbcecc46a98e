"""The claim order comes from ``kgworker_pending_chapters``; its entries are hints that
the chapter rows overrule: rows worked or reset by someone else are still claimed right."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.store import chapters as chapter_store
from kgworker.store import claims
from kgworker.store import tasks as task_store
from tests.pipeline.conftest import add_book, add_task


async def _entries(db: AsyncEngine, task_id: int) -> list[int]:
    async with db.connect() as conn:
        return [int(r[0]) for r in await conn.execute(text(
            "SELECT chapter_number FROM kgworker_pending_chapters WHERE task_id = :t"
            " ORDER BY chapter_number"), {"t": task_id})]


async def _set_rows(db: AsyncEngine, task_id: int, ids: list[int], status: str) -> None:
    async with db.begin() as conn:
        await conn.execute(text(
            "UPDATE knowledge_graph_chapter_status SET status = :s"
            " WHERE kg_task_id = :t AND chapter_id IN :ids"
        ).bindparams(ids=tuple(ids)), {"s": status, "t": task_id, "ids": tuple(ids)})


async def test_claims_follow_the_rows_not_the_hints(db: AsyncEngine, novel_id: int) -> None:
    ids = await add_book(db, novel_id, 40)  # ids by chapter_number, inserted shuffled
    tid = await add_task(db, novel_id)
    await task_store.start_task(db, tid)
    assert await _entries(db, tid) == list(range(1, 41))

    first = await claims.claim_chapter(db, tid, "a", 60)
    assert first is not None and first.chapter_number == 1
    assert await _entries(db, tid) == list(range(2, 41))
    assert await chapter_store.release_chapter(db, first)
    assert await _entries(db, tid) == list(range(1, 41))  # back in its place

    # someone else completed chapters 1-30 (more stale entries than a few windows)
    await _set_rows(db, tid, ids[:30], "completed")
    got = await claims.claim_chapter(db, tid, "a", 60)
    assert got is not None and got.chapter_number == 31
    assert await _entries(db, tid) == list(range(32, 41))  # the stale ones are gone

    # a row made pending from outside while the task runs (chaishu's startup recovery)
    # has no entry: claims find it once the entries run out
    await _set_rows(db, tid, ids[31:], "completed")
    await _set_rows(db, tid, [ids[4]], "pending")
    late = await claims.claim_chapter(db, tid, "a", 60)
    assert late is not None and late.chapter_id == ids[4]
    assert await claims.claim_chapter(db, tid, "a", 60) is None
    assert await _entries(db, tid) == []


async def test_a_batch_claims_in_order_skipping_worked_rows(
    db: AsyncEngine, novel_id: int
) -> None:
    ids = await add_book(db, novel_id, 12)
    tid = await add_task(db, novel_id)
    await task_store.start_task(db, tid)
    await _set_rows(db, tid, [ids[1], ids[2]], "completed")  # worked by someone else
    batch = await claims.claim_chapters(db, tid, "a", 60, 5)
    assert [c.chapter_number for c in batch] == [1, 4, 5, 6, 7]
    assert len({c.token for c in batch}) == 5 and {c.attempts for c in batch} == {1}
    async with db.connect() as conn:
        running = {int(r[0]) for r in await conn.execute(text(
            "SELECT chapter_id FROM knowledge_graph_chapter_status"
            " WHERE kg_task_id = :t AND status = 'running'"), {"t": tid})}
        current = await conn.scalar(text(
            "SELECT current_chapter_id FROM knowledge_graph_tasks WHERE id = :t"), {"t": tid})
    assert running == {c.chapter_id for c in batch} and current == ids[6]
    assert await _entries(db, tid) == list(range(8, 13))
    rest = await claims.claim_chapters(db, tid, "b", 60, 100)  # fewer are left
    assert [c.chapter_number for c in rest] == list(range(8, 13))
    assert await claims.claim_chapters(db, tid, "b", 60, 5) == []
    assert await chapter_store.release_chapter(db, batch[2])
    again = await claims.claim_chapters(db, tid, "c", 60, 5)
    assert [c.chapter_number for c in again] == [5]  # a released chapter is claimed again
