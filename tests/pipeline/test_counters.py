"""A task's counters grow with each finished chapter and equal the sums of its chapter rows;
when the task finishes they are recounted, so a skew written from outside is corrected."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.duties import run_duties_once
from kgworker.domain.clock import chaishu_now
from kgworker.observe.checks import counter_checks
from kgworker.store import chapters as chapter_store
from kgworker.store import claims
from kgworker.store import tasks as task_store
from kgworker.store.chapters import ChapterClaimed
from kgworker.store.finish_groups import Completed, finish_completed
from tests.pipeline.conftest import Env, add_book, add_task, make_job, set_task, task_row


async def _sums(db: AsyncEngine, task_id: int) -> tuple[int, ...]:
    """(total, completed, failed, entities, relations) summed from the chapter rows."""
    async with db.connect() as conn:
        row = (await conn.execute(text(
            "SELECT COUNT(*), COALESCE(SUM(status = 'completed'), 0),"
            " COALESCE(SUM(status = 'failed'), 0),"
            " COALESCE(SUM(IF(status = 'completed', entities_extracted, 0)), 0),"
            " COALESCE(SUM(IF(status = 'completed', relations_extracted, 0)), 0)"
            " FROM knowledge_graph_chapter_status WHERE kg_task_id = :t"), {"t": task_id})).one()
    return tuple(int(v) for v in row)


async def _counters(db: AsyncEngine, task_id: int) -> tuple[int, ...]:
    t = await task_row(db, task_id)
    return (t.total_chapters, t.completed_chapters, t.failed_chapters, t.total_entities,
            t.total_relations)


async def _claim(db: AsyncEngine, task_id: int, lease: float = 60.0) -> ChapterClaimed:
    claim = await claims.claim_chapter(db, task_id, "node-a", lease)
    assert claim is not None
    return claim


async def _reaped(db: AsyncEngine, task_id: int, deadline: float = 10.0,
                  max_attempts: int = 1) -> list[Any]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        reaped = await chapter_store.reap_expired(db, task_id=task_id,
                                                  max_attempts=max_attempts)
        if reaped:
            return reaped
        await asyncio.sleep(0.05)
    raise AssertionError("the expired claim was not reaped")


async def test_counters_equal_the_sums_through_every_finish(db: AsyncEngine, novel_id: int) -> None:
    await add_book(db, novel_id, 7)
    tid = await add_task(db, novel_id)
    await task_store.start_task(db, tid)
    assert await _counters(db, tid) == await _sums(db, tid) == (7, 0, 0, 0, 0)

    done = await chapter_store.finish_chapter(db, await _claim(db, tid), entities=4, relations=3)
    assert not done.lost and await _counters(db, tid) == await _sums(db, tid) == (7, 1, 0, 4, 3)

    failed = await chapter_store.finish_chapter(db, await _claim(db, tid), error="bad answer")
    assert not failed.lost and await _counters(db, tid) == (7, 1, 1, 4, 3) == await _sums(db, tid)

    lost = await _claim(db, tid, lease=0.05)  # expires: given up after its one attempt
    assert await _reaped(db, tid) == [(tid, lost.chapter_id)]
    assert await _counters(db, tid) == await _sums(db, tid) == (7, 1, 2, 4, 3)
    assert (await chapter_store.finish_chapter(db, lost, entities=9)).lost  # fenced: not counted
    assert await _counters(db, tid) == (7, 1, 2, 4, 3)

    first, second = await _claim(db, tid), await _claim(db, tid)
    again = await asyncio.gather(  # one claim finished twice at once counts once
        chapter_store.finish_chapter(db, first, entities=2, relations=1),
        chapter_store.finish_chapter(db, first, entities=2, relations=1))
    assert sorted(r.lost for r in again) == [False, True]
    assert await _counters(db, tid) == await _sums(db, tid) == (7, 2, 2, 6, 4)

    third = await _claim(db, tid)
    both = await asyncio.gather(  # two chapters on two connections, on one task row lock
        chapter_store.finish_chapter(db, second, entities=1, relations=1),
        chapter_store.finish_chapter(db, third, entities=5, relations=2))
    assert [r.lost for r in both] == [False, False]
    assert await _counters(db, tid) == await _sums(db, tid) == (7, 4, 2, 12, 7)
    assert (await task_row(db, tid)).status == "running"

    last = await chapter_store.finish_chapter(db, await _claim(db, tid), entities=1)
    assert last.finalised == "failed" and last.progress is not None
    assert await _counters(db, tid) == await _sums(db, tid) == (7, 5, 2, 13, 7)
    assert await claims.claim_chapter(db, tid, "node-a", 60) is None


async def test_counters_are_recounted_when_the_task_finishes(
    db: AsyncEngine, novel_id: int
) -> None:
    await add_book(db, novel_id, 3)
    tid = await add_task(db, novel_id)
    await task_store.start_task(db, tid)
    await chapter_store.finish_chapter(db, await _claim(db, tid), entities=2, relations=1)
    assert [f.level for f in await counter_checks(db)] == ["OK"]
    # someone else's write: entities off, and a chapter counted that is not done
    await set_task(db, tid, total_entities=500, total_relations=0, completed_chapters=2)
    skewed = await counter_checks(db)  # kgworker doctor recounts
    assert [f.level for f in skewed] == ["WARN"] and skewed[0].message.endswith(f": {tid}")
    early = await chapter_store.finish_chapter(db, await _claim(db, tid), entities=2)
    assert early.finalised is None  # the counters said done; the recount said not yet
    assert await _counters(db, tid) == await _sums(db, tid) == (3, 2, 0, 4, 1)
    progress = await task_store.progress_of(db, tid)
    assert progress is not None and not progress.finished  # read from the counters

    await set_task(db, tid, total_entities=77, total_relations=77)
    last = await chapter_store.finish_chapter(db, await _claim(db, tid), entities=3, relations=3)
    assert last.finalised == "completed"
    assert await _counters(db, tid) == await _sums(db, tid) == (3, 3, 0, 7, 4)
    assert [f.level for f in await counter_checks(db)] == ["OK"]


async def test_counters_skewed_low_are_recounted_by_the_recovery_duty(
    env: Env, novel_id: int
) -> None:
    db = env.db
    await add_book(db, novel_id, 2)
    tid = await add_task(db, novel_id)
    await task_store.start_task(db, tid)
    await chapter_store.finish_chapter(db, await _claim(db, tid), entities=1)
    await set_task(db, tid, completed_chapters=0)  # someone else's write lost our count
    last = await chapter_store.finish_chapter(db, await _claim(db, tid), entities=1)
    assert last.finalised is None and not last.lost  # the counters say 1 of 2
    assert not await env.handler().is_complete(make_job(tid))
    settings = env.settings.model_copy(update={"kg_recovery_grace": 1})
    await set_task(db, tid, updated_at=chaishu_now() - timedelta(seconds=5))
    await run_duties_once(settings, env.redis, db)  # an idle running task, no live claim
    assert (await task_row(db, tid)).status == "completed"
    assert await _counters(db, tid) == await _sums(db, tid) == (2, 2, 0, 2, 0)


async def test_a_commit_group_moves_only_the_chapters_it_still_holds(
    db: AsyncEngine, novel_id: int
) -> None:
    """finish_completed (the node's grouped commit): a chapter whose claim was reaped and
    taken by another node is left to it, the counters move by the chapters moved, progress
    comes back once (on the last), and the group that completes the book finalises it."""
    await add_book(db, novel_id, 4)
    tid = await add_task(db, novel_id)
    await task_store.start_task(db, tid)
    kept, stolen = await _claim(db, tid), await _claim(db, tid, lease=0.05)
    assert await _reaped(db, tid, max_attempts=3) == [(tid, stolen.chapter_id)]
    retaken = await _claim(db, tid)  # another node holds the reaped chapter now
    assert retaken.chapter_id == stolen.chapter_id and retaken.token != stolen.token
    third = await _claim(db, tid)
    group = await finish_completed(db, tid, [
        Completed(kept, 2, 1, None), Completed(stolen, 9, 9, None), Completed(third, 3, 2, None)])
    assert [r.lost for r in group] == [False, True, False]
    assert [r.progress is not None for r in group] == [False, False, True]
    assert group[2].finalised is None
    assert await _counters(db, tid) == await _sums(db, tid) == (4, 2, 0, 5, 3)
    twice = await finish_completed(db, tid, [Completed(kept, 2, 1, None)])  # fenced again
    assert [r.lost for r in twice] == [True]
    last = await finish_completed(db, tid, [
        Completed(retaken, 1, 0, None), Completed(await _claim(db, tid), 1, 1, None)])
    assert [r.lost for r in last] == [False, False] and last[1].finalised == "completed"
    assert await _counters(db, tid) == await _sums(db, tid) == (4, 4, 0, 7, 4)
