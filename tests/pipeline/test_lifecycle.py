"""Task and chapter lifecycle of docs/chaishu-compat.md §1, driving the handler directly (the
runtime's part — queue claims, slots, lease timer — is replaced by tests/pipeline.drive)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text

from kgworker.chaishu.duties import run_duties_once
from kgworker.domain.clock import chaishu_now
from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionError
from kgworker.runtime.handler import JobStart
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus
from tests.pipeline.conftest import (
    Env,
    add_book,
    add_task,
    chapter_rows,
    drain,
    drive,
    make_job,
    set_task,
    task_row,
)
from tests.pipeline.graphprint import fingerprint
from tests.support.fixed import FAIL_MARK, RETRY_MARK, FixedExtractor, sample_chapter
from tests.support.tasks import restart


async def test_start_refuses_joins_and_rejects_missing(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 2)
    handler = env.handler()
    for status in ("completed", "cancelled"):
        tid = await add_task(env.db, novel_id, status=status)
        assert await handler.start(make_job(tid)) is JobStart.DONE
        assert (await task_row(env.db, tid)).status == status
        assert await chapter_rows(env.db, tid) == {}
    tid = await add_task(env.db, novel_id)
    assert await handler.start(make_job(tid)) is JobStart.OPEN
    row = await task_row(env.db, tid)
    assert row.status == "running" and row.started_at is not None and row.total_chapters == 2
    assert await handler.start(make_job(tid, claim="c2")) is JobStart.OPEN  # join
    assert len(await chapter_rows(env.db, tid)) == 2
    # a deleted task's item is stale, not poison: dropped, never dead-lettered (issue 14)
    assert await handler.start(make_job(999_999)) is JobStart.DROPPED


async def test_order_missing_rows_committed_chapters_and_counters(
    env: Env, novel_id: int
) -> None:
    ids = await add_book(env.db, novel_id, 8)
    tid = await add_task(env.db, novel_id, chapter_ids=json.dumps(ids[:6]))
    now = chaishu_now()
    async with env.db.begin() as conn:  # chapter 2 was completed by an earlier run
        await conn.execute(insert(KnowledgeGraphChapterStatus).values(
            kg_task_id=tid, chapter_id=ids[1], status="completed", entities_extracted=3,
            relations_extracted=2, created_at=now, updated_at=now))
    extractor = FixedExtractor()
    order = await drive(env.handler(extractor), make_job(tid))
    assert order == [ids[0], *ids[2:6]]  # chapter_number order, completed one not redone
    assert extractor.calls == 5
    rows = await chapter_rows(env.db, tid)
    assert set(rows) == set(ids[:6]) and {r.status for r in rows.values()} == {"completed"}
    task = await task_row(env.db, tid)
    assert (task.status, task.total_chapters, task.completed_chapters,
            task.failed_chapters) == ("completed", 6, 6, 0)
    assert task.total_entities == sum(r.entities_extracted for r in rows.values())
    assert task.total_relations == sum(r.relations_extracted for r in rows.values())
    assert task.completed_at is not None


async def test_progress_event_on_every_chapter(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 4)
    tid = await add_task(env.db, novel_id)
    channel = f"kg:task_progress:{novel_id}"  # pub/sub ignores the database number
    env.settings = env.settings.model_copy(update={"kg_progress_channel": channel})
    pubsub = env.redis.pubsub()
    await pubsub.subscribe(channel)
    await drive(env.handler(), make_job(tid), slots=2)
    events = await drain(pubsub)
    assert len(events) == 1 + 4  # started, then one per chapter
    assert set(events[-1]) == {"type", "task_id", "status", "progress", "completed_chapters",
                               "failed_chapters", "total_chapters", "updated_at"}
    assert events[-1]["type"] == "kg_task_progress" and events[-1]["status"] == "completed"
    assert events[-1]["progress"] == 100.0 and events[-1]["completed_chapters"] == 4
    assert sorted(e["completed_chapters"] for e in events[1:]) == [1, 2, 3, 4]


async def test_failed_chapter_fails_task_then_auto_retry_runs_it(
    env: Env, novel_id: int
) -> None:
    texts = [sample_chapter(1), sample_chapter(2) + FAIL_MARK, sample_chapter(3)]
    ids = await add_book(env.db, novel_id, 3, texts=texts)
    tid = await add_task(env.db, novel_id, auto_retry_enabled=True, retry_interval_minutes=5)
    await drive(env.handler(), make_job(tid))
    task = await task_row(env.db, tid)
    assert (task.status, task.completed_chapters, task.failed_chapters) == ("failed", 2, 1)
    assert task.last_error_chapter_id == ids[1] and "unparseable" in task.error_message
    assert task.failed_at is not None
    delay = task.retry_scheduled_at - task.failed_at
    assert timedelta(minutes=5) <= delay < timedelta(minutes=5, seconds=2)
    assert (await chapter_rows(env.db, tid))[ids[1]].status == "failed"

    assert (await run_duties_once(env.settings, env.redis, env.db))["retried"] == []  # not yet
    await set_task(env.db, tid, retry_scheduled_at=chaishu_now() - timedelta(seconds=1))
    async with env.db.begin() as conn:  # the chapter got fixed meanwhile
        await conn.execute(text("UPDATE chapters SET content = :c WHERE id = :id"),
                           {"c": sample_chapter(2), "id": ids[1]})
    assert (await run_duties_once(env.settings, env.redis, env.db))["retried"] == [tid]
    task = await task_row(env.db, tid)
    assert (task.status, task.retry_count, task.error_message, task.failed_chapters,
            task.retry_scheduled_at) == ("created", 1, None, 0, None)
    item = await env.redis.lpop("kg:ai_queue:openai")
    assert json.loads(item) == {"task_id": tid, "provider": "openai"}
    extractor = FixedExtractor()
    await drive(env.handler(extractor), make_job(tid))
    assert extractor.calls == 1  # only the failed chapter ran again
    assert (await task_row(env.db, tid)).status == "completed"


async def test_retryable_error_retries_then_fails(env: Env, novel_id: int) -> None:
    ids = await add_book(env.db, novel_id, 1, texts=[RETRY_MARK])
    tid = await add_task(env.db, novel_id)
    extractor = FixedExtractor()
    await drive(env.handler(extractor), make_job(tid))
    assert extractor.calls == 0  # the marker fails before any call
    row = (await chapter_rows(env.db, tid))[ids[0]]
    assert row.status == "failed" and "transient" in row.error_message
    async with env.db.connect() as conn:
        attempts = await conn.scalar(text("SELECT attempts FROM kgworker_chapter_claims"))
    assert attempts == env.settings.kg_chapter_max_attempts
    assert (await task_row(env.db, tid)).status == "failed"


class SuspendingExtractor:
    """Trips the breaker on its first call, like a provider failing three times."""

    def __init__(self, env: Env) -> None:
        self.env = env

    async def extract(self, chapter: ChapterInput, options: Any) -> ChapterExtraction:
        await self.env.redis.set("ai:provider:suspend:openai", json.dumps({"until": 0}), ex=600)
        raise ExtractionError("provider failing", retryable=True)


async def test_pause_by_suspend_key(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 3)
    tid = await add_task(env.db, novel_id)
    await drive(env.handler(SuspendingExtractor(env)), make_job(tid))
    task = await task_row(env.db, tid)
    assert task.status == "paused" and task.paused_at is not None
    assert {r.status for r in (await chapter_rows(env.db, tid)).values()} == {"pending"}
    # key present before a chapter: no claim at all; gone: a new queue item resumes the task
    await set_task(env.db, tid, status="running")
    assert await env.handler().claim_unit(make_job(tid), "n", 30) is None
    assert (await task_row(env.db, tid)).status == "paused"
    await env.redis.delete("ai:provider:suspend:openai")
    await drive(env.handler(), make_job(tid))
    assert (await task_row(env.db, tid)).status == "completed"


async def test_cancel_mid_run_stops_between_chapters(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 10)
    tid = await add_task(env.db, novel_id)
    extractor = FixedExtractor(delay=0.3)
    handler = env.handler(extractor)
    job = make_job(tid)
    run = asyncio.create_task(drive(handler, job, slots=2))
    await asyncio.sleep(0.75)  # two rounds of two chapters under way
    await set_task(env.db, tid, status="cancelled")
    await asyncio.wait_for(run, 5)
    rows = await chapter_rows(env.db, tid)
    done = sum(r.status == "completed" for r in rows.values())
    assert 2 <= done <= 4
    assert {r.status for r in rows.values()} == {"completed", "pending"}  # none left running
    assert extractor.calls <= 6  # the in-flight pair was cancelled, nothing more started
    assert (await task_row(env.db, tid)).status == "cancelled"
    assert await handler.is_complete(job)


async def test_restart_rebuilds_without_duplicates(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 5)
    tid = await add_task(env.db, novel_id)
    handler = env.handler()
    await drive(handler, make_job(tid), slots=3)
    first = await fingerprint(env.driver, novel_id)
    before = await task_row(env.db, tid)
    assert not await restart(handler, 999_999)
    assert await restart(handler, tid)
    task = await task_row(env.db, tid)
    assert (task.status, task.completed_chapters, task.total_entities) == ("created", 0, 0)
    assert {r.status for r in (await chapter_rows(env.db, tid)).values()} == {"pending"}
    records, _, _ = await env.driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $n RETURN count(n)", n=novel_id)
    assert records[0][0] == 0  # graph removed by task id
    assert json.loads(await env.redis.lpop("kg:ai_queue:openai"))["task_id"] == tid
    await drive(handler, make_job(tid), slots=3)
    assert await fingerprint(env.driver, novel_id) == first
    after = await task_row(env.db, tid)
    assert (after.total_entities, after.total_relations) == (before.total_entities,
                                                             before.total_relations)


async def test_a_reset_in_the_second_of_our_finish_starts_attempts_anew(
    env: Env, novel_id: int
) -> None:
    """chaishu's ``updated_at`` has whole seconds: a restart by the app in the same second
    as our finish leaves it unchanged, and must still not count as a second attempt."""
    await add_book(env.db, novel_id, 2)
    tid = await add_task(env.db, novel_id)
    handler = env.handler()
    for _ in range(3):
        await drive(handler, make_job(tid))
        assert (await task_row(env.db, tid)).status == "completed"
        async with env.db.begin() as conn:  # the app's restart, updated_at left as it was
            await conn.execute(text(
                "UPDATE knowledge_graph_chapter_status SET status = 'pending', "
                "completed_at = NULL, started_at = NULL, updated_at = updated_at "
                "WHERE kg_task_id = :t"), {"t": tid})
            await conn.execute(text(
                "UPDATE knowledge_graph_tasks SET status = 'created', completed_chapters = 0, "
                "total_entities = 0, total_relations = 0, completed_at = NULL "
                "WHERE id = :t"), {"t": tid})
    await drive(handler, make_job(tid))
    async with env.db.connect() as conn:
        attempts = [int(a) for (a,) in await conn.execute(text(
            "SELECT attempts FROM kgworker_chapter_claims WHERE task_id = :t"), {"t": tid})]
    assert attempts == [1, 1]  # each run was a first attempt, however fast the resets came


async def test_lease_expiry_fencing_and_renewal(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 2)
    tid = await add_task(env.db, novel_id)
    handler = env.handler()
    job = make_job(tid)
    await handler.start(job)
    dead = await handler.claim_unit(job, "dead-node", 0.2)
    alive = await handler.claim_unit(job, "live-node", 30)
    assert dead is not None and alive is not None
    assert await handler.renew_units("live-node", [alive], 30) == set()
    await asyncio.sleep(0.3)
    assert not await handler.is_complete(job)  # reaps the expired claim
    assert (await chapter_rows(env.db, tid))[dead.data.chapter_id].status == "pending"
    assert await handler.renew_units("dead-node", [dead], 30) == {dead.key}
    await handler.run_unit(job, dead)  # fenced: the old holder cannot commit it
    assert (await chapter_rows(env.db, tid))[dead.data.chapter_id].status == "pending"
    await handler.run_unit(job, alive)
    await drive(handler, job, start=False)
    assert (await task_row(env.db, tid)).status == "completed"


async def test_recovery_requeues_a_running_task_nobody_holds(env: Env, novel_id: int) -> None:
    ids = await add_book(env.db, novel_id, 3)
    tid = await add_task(env.db, novel_id)
    handler = env.handler()
    await handler.start(make_job(tid))
    async with env.db.begin() as conn:  # the old worker died mid-chapter: no claim row
        await conn.execute(text(  # ... and its row has been idle past the grace since
            "UPDATE knowledge_graph_chapter_status SET status = 'running', updated_at = :at"
            " WHERE chapter_id = :c"), {"c": ids[0], "at": chaishu_now() - timedelta(seconds=5)})
    settings = env.settings.model_copy(update={"kg_recovery_grace": 1})
    assert (await run_duties_once(settings, env.redis, env.db))["recovered"] == []  # too fresh
    await set_task(env.db, tid, updated_at=chaishu_now() - timedelta(seconds=5))
    assert (await run_duties_once(settings, env.redis, env.db))["recovered"] == [tid]
    assert (await chapter_rows(env.db, tid))[ids[0]].status == "pending"
    assert await env.redis.llen("kg:ai_queue:openai") == 1
    await set_task(env.db, tid, updated_at=chaishu_now() - timedelta(seconds=5))
    assert (await run_duties_once(settings, env.redis, env.db))["recovered"] == []  # once
    await drive(handler, make_job(tid))
    assert (await task_row(env.db, tid)).status == "completed"


async def test_crash_between_graph_and_mysql_commit_redoes_same_graph(
    env: Env, novel_id: int
) -> None:
    """In-process version of the kill -9 test: the hook dies after the graph commit."""
    await add_book(env.db, novel_id, 4)
    tid = await add_task(env.db, novel_id)

    class Crash(BaseException):
        pass

    async def crash_on_third(claim: Any) -> None:
        if claim.chapter_number == 3:
            raise Crash

    job = make_job(tid)
    crashing = env.handler(on_graph_written=crash_on_third)
    with pytest.raises(Crash):
        await drive(crashing, job, lease=0.3)
    assert (await task_row(env.db, tid)).status == "running"
    await asyncio.sleep(0.4)
    await drive(env.handler(), job, start=False)  # reaps the stale chapter, redoes it
    crashed = await fingerprint(env.driver, novel_id, normalize=True)
    task = await task_row(env.db, tid)
    assert (task.status, task.completed_chapters) == ("completed", 4)
    clean_tid = await add_task(env.db, novel_id)  # a clean run of the same book
    await env.handler().writer.delete_task(tid, novel_id)
    await drive(env.handler(), make_job(clean_tid))
    assert await fingerprint(env.driver, novel_id, normalize=True) == crashed
    clean = await task_row(env.db, clean_tid)
    assert (clean.total_entities, clean.total_relations) == (task.total_entities,
                                                             task.total_relations)
