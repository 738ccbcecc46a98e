"""The chaishu task lifecycle (docs/chaishu-compat.md §1) on ``knowledge_graph_tasks``.

Every transition of a task happens under its row lock (``SELECT … FOR UPDATE``). A
finished chapter adds to the counters (:func:`count_finished`) in the same transaction
that moved its row, and only when the row really moved, so a chapter's cost does not
grow with the book. Finalisation (``running`` → ``completed`` / ``failed``) is checked in
that transaction: once the counters say every chapter is done, the chapter rows are
recounted — the recount is the truth, and corrects counters that someone else skewed —
and the status flips only if the recount agrees. The last finisher flips it, any later
one finds the task no longer ``running``: a task is finalised exactly once across the
fleet. Starting, pausing, resets, the audit duty and ``kgworker doctor`` recount too.
Counters someone else left too low never reach the total: the task then sits idle with
no live claim, and the recovery duty's :func:`finalise_task` recounts and finalises it
(``KG_RECOVERY_GRACE`` after its last chapter).
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.progress import Progress
from kgworker.domain.status import ChapterStatus, TaskStatus
from kgworker.store import pending
from kgworker.store.schema.chaishu import (
    Chapter,
    KnowledgeGraphChapterStatus,
    KnowledgeGraphConfig,
    KnowledgeGraphTask,
)
from kgworker.store.txn import in_transaction, read_committed

log = logging.getLogger(__name__)

T = KnowledgeGraphTask
CS = KnowledgeGraphChapterStatus


class StartOutcome(enum.Enum):
    STARTED = "started"  #: was created/paused/failed, now running
    JOINED = "joined"  #: was already running
    REFUSED = "refused"  #: completed or cancelled: drop the queue item
    MISSING = "missing"  #: no such task


@dataclass(frozen=True, slots=True)
class StartResult:
    outcome: StartOutcome
    progress: Progress | None = None
    finalised: str | None = None  #: new status when starting found nothing left to do


async def lock_task(conn: AsyncConnection, task_id: int) -> Row[Any] | None:
    result = await conn.execute(select(T).where(T.id == task_id).with_for_update())
    return result.first()


async def recount(conn: AsyncConnection, task_id: int, status: str) -> Progress:
    rows = await conn.execute(
        select(
            CS.status,
            func.count(CS.chapter_id.distinct()),
            func.coalesce(func.sum(CS.entities_extracted), 0),
            func.coalesce(func.sum(CS.relations_extracted), 0),
        )
        .where(CS.kg_task_id == task_id)
        .group_by(CS.status)
    )
    counts: dict[str, int] = {}
    entities = relations = 0
    for chapter_status, count, ents, rels in rows:
        counts[chapter_status] = int(count)
        if chapter_status == ChapterStatus.COMPLETED:
            entities, relations = int(ents), int(rels)
    return Progress(
        task_id=task_id,
        status=status,
        total=sum(counts.values()),
        pending=counts.get(ChapterStatus.PENDING, 0),
        running=counts.get(ChapterStatus.RUNNING, 0),
        completed=counts.get(ChapterStatus.COMPLETED, 0),
        failed=counts.get(ChapterStatus.FAILED, 0),
        skipped=counts.get(ChapterStatus.SKIPPED, 0),
        entities=entities,
        relations=relations,
    )


def counted(task: Row[Any] | Any, status: str | None = None) -> Progress:
    """A task's Progress from its counters (no recount): pending counts what is not done.

    Only the done chapters are counted on the task row, so ``running`` is folded into
    ``pending``; ``finished`` is then "completed + failed + skipped reached the total".
    """
    total = int(task.total_chapters or 0)
    completed = int(task.completed_chapters or 0)
    failed = int(task.failed_chapters or 0)
    skipped = int(task.skipped_chapters or 0)
    return Progress(
        task_id=int(task.id), status=status or task.status, total=total,
        pending=max(0, total - completed - failed - skipped), completed=completed,
        failed=failed, skipped=skipped, entities=int(task.total_entities or 0),
        relations=int(task.total_relations or 0),
    )


async def count_finished(
    conn: AsyncConnection, task: Row[Any], *, completed: int = 0, failed: int = 0,
    entities: int = 0, relations: int = 0, **extra: Any,
) -> Progress:
    """Add finished chapters to the counters of the locked ``task``; finalise if done.

    The caller holds the task row lock and has just moved the chapter rows it counts
    (rowcount 1 each). The new counters are the locked row's plus the deltas; when they
    reach the total, :func:`finalise_locked` recounts and decides.
    """
    now = chaishu_now()
    await conn.execute(
        update(T).where(T.id == task.id).values(
            completed_chapters=func.coalesce(T.completed_chapters, 0) + completed,
            failed_chapters=func.coalesce(T.failed_chapters, 0) + failed,
            total_entities=func.coalesce(T.total_entities, 0) + entities,
            total_relations=func.coalesce(T.total_relations, 0) + relations,
            updated_at=now, **extra,
        )
    )
    progress = counted(task)
    progress = replace(
        progress, completed=progress.completed + completed, failed=progress.failed + failed,
        pending=max(0, progress.pending - completed - failed),
        entities=progress.entities + entities, relations=progress.relations + relations,
    )
    if task.status != TaskStatus.RUNNING or not progress.finished:
        return progress
    return await finalise_locked(conn, task, await recount(conn, task.id, task.status))


async def store_counters(
    conn: AsyncConnection, progress: Progress, **extra: Any
) -> None:
    values: dict[str, Any] = {
        "total_chapters": progress.total,
        "completed_chapters": progress.completed,
        "failed_chapters": progress.failed,
        "skipped_chapters": progress.skipped,
        "total_entities": progress.entities,
        "total_relations": progress.relations,
        "updated_at": chaishu_now(),
    }
    await conn.execute(update(T).where(T.id == progress.task_id).values({**values, **extra}))


async def finalise_locked(conn: AsyncConnection, task: Row[Any], progress: Progress) -> Progress:
    """``running`` → ``completed`` / ``failed`` once nothing is pending or running.

    The caller holds the task row lock and has just recounted ``progress``.
    """
    if task.status != TaskStatus.RUNNING or not progress.finished:
        await store_counters(conn, progress)
        return progress
    now = chaishu_now()
    if progress.completed + progress.skipped == progress.total:
        await store_counters(conn, progress, status=TaskStatus.COMPLETED, completed_at=now)
        return replace(progress, status=TaskStatus.COMPLETED)
    last = (
        await conn.execute(
            select(CS.chapter_id, CS.error_message)
            .where(CS.kg_task_id == task.id, CS.status == ChapterStatus.FAILED)
            .order_by(CS.updated_at.desc(), CS.id.desc())
            .limit(1)
        )
    ).first()
    scheduled = (
        now + timedelta(minutes=task.retry_interval_minutes or 10)
        if task.auto_retry_enabled
        else None
    )
    failed = replace(progress, status=TaskStatus.FAILED)
    await store_counters(
        conn,
        failed,
        status=TaskStatus.FAILED,
        failed_chapters=progress.failed + progress.pending,
        failed_at=now,
        error_message=last.error_message if last is not None else "chapters failed",
        last_error_chapter_id=last.chapter_id if last is not None else None,
        retry_scheduled_at=scheduled,
    )
    return failed


async def ensure_chapter_rows(conn: AsyncConnection, task: Row[Any]) -> None:
    """Create the missing chapter rows of a task; mark rows of vanished chapters skipped."""
    query = select(Chapter.id).where(Chapter.novel_id == task.novel_id)
    wanted = _chapter_ids(task.chapter_ids)
    if wanted is not None:
        query = query.where(Chapter.id.in_(wanted))
    ordered = query.order_by(Chapter.chapter_number, Chapter.id)
    chapters = list((await conn.execute(ordered)).scalars())
    existing = {
        row.chapter_id: row.status
        for row in await conn.execute(
            select(CS.chapter_id, CS.status).where(CS.kg_task_id == task.id)
        )
    }
    now = chaishu_now()
    missing = [cid for cid in chapters if cid not in existing]
    if missing:
        await conn.execute(
            insert(CS),
            [
                {
                    "kg_task_id": task.id, "chapter_id": cid, "status": ChapterStatus.PENDING,
                    "entities_extracted": 0, "relations_extracted": 0,
                    "created_at": now, "updated_at": now,
                }
                for cid in missing
            ],
        )
    vanished = [cid for cid, st in existing.items() if cid not in set(chapters)
                and st == ChapterStatus.PENDING]
    if vanished:
        await conn.execute(
            update(CS)
            .where(CS.kg_task_id == task.id, CS.chapter_id.in_(vanished))
            .values(status=ChapterStatus.SKIPPED, updated_at=now)
        )


def _chapter_ids(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else None
        if value is None:
            return None
    return [int(v) for v in value]


async def start_task(engine: AsyncEngine, task_id: int) -> StartResult:
    """Start (or join) a task under its row lock, as docs/chaishu-compat.md §1 says."""

    async def work(conn: AsyncConnection) -> StartResult:
        task = await lock_task(conn, task_id)
        if task is None:
            return StartResult(StartOutcome.MISSING)
        if task.status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED):
            return StartResult(StartOutcome.REFUSED)
        await ensure_chapter_rows(conn, task)
        await pending.seed(conn, task_id)
        outcome = StartOutcome.JOINED
        if task.status != TaskStatus.RUNNING:
            outcome = StartOutcome.STARTED
            now = chaishu_now()
            await conn.execute(
                update(T).where(T.id == task_id)
                .values(status=TaskStatus.RUNNING, started_at=now, updated_at=now)
            )
            task = await lock_task(conn, task_id)
            assert task is not None
        progress = await recount(conn, task_id, TaskStatus.RUNNING)
        after = await finalise_locked(conn, task, progress)
        finalised = after.status if after.status != TaskStatus.RUNNING else None
        return StartResult(outcome, after, finalised)

    return await in_transaction(read_committed(engine), work)


async def task_status(engine: AsyncEngine, task_id: int) -> str | None:
    async with engine.connect() as conn:
        status: str | None = await conn.scalar(select(T.status).where(T.id == task_id))
        return status


async def progress_of(engine: AsyncEngine, task_id: int) -> Progress | None:
    """A task's Progress from its counters (:func:`counted`): one row read, no recount."""
    async with engine.connect() as conn:
        task = (await conn.execute(select(T).where(T.id == task_id))).first()
        return None if task is None else counted(task)


async def pause_task(engine: AsyncEngine, task_id: int) -> Progress | None:
    """``running`` → ``paused`` (provider suspended or a user's pause); None if not running."""

    async def work(conn: AsyncConnection) -> Progress | None:
        task = await lock_task(conn, task_id)
        if task is None or task.status != TaskStatus.RUNNING:
            return None
        now = chaishu_now()
        await conn.execute(
            update(T).where(T.id == task_id)
            .values(status=TaskStatus.PAUSED, paused_at=now, updated_at=now)
        )
        return await recount(conn, task_id, TaskStatus.PAUSED)

    return await in_transaction(read_committed(engine), work)


async def finalise_task(engine: AsyncEngine, task_id: int) -> Progress | None:
    """Finalise a running task whose chapters are all finished; the new Progress or None."""

    async def work(conn: AsyncConnection) -> Progress | None:
        task = await lock_task(conn, task_id)
        if task is None or task.status != TaskStatus.RUNNING:
            return None
        after = await finalise_locked(conn, task, await recount(conn, task_id, task.status))
        return after if after.status != TaskStatus.RUNNING else None

    return await in_transaction(read_committed(engine), work)


async def queue_provider(conn: AsyncConnection, task: Row[Any] | Any) -> str:
    """The provider a task is queued for: ``rules`` without AI, else the default config's."""
    if not task.use_ai:
        return "rules"
    provider = await conn.scalar(
        select(KnowledgeGraphConfig.ai_provider)
        .where(KnowledgeGraphConfig.is_default.is_(True))
        .order_by(KnowledgeGraphConfig.id)
        .limit(1)
    )
    return provider or "rules"


async def queue_provider_of(engine: AsyncEngine, task_id: int) -> str | None:
    """:func:`queue_provider` of a task by id; None when the task does not exist."""
    async with engine.connect() as conn:
        task = (await conn.execute(select(T.id, T.use_ai).where(T.id == task_id))).first()
        return None if task is None else await queue_provider(conn, task)


_STALE_TASKS = text(
    "SELECT t.id FROM knowledge_graph_tasks t"
    " WHERE t.status = 'running' AND (t.updated_at IS NULL OR t.updated_at < :idle_since)"
    " AND NOT EXISTS (SELECT 1 FROM kgworker_chapter_claims cl WHERE cl.task_id = t.id"
    " AND cl.token IS NOT NULL AND cl.lease_until >= NOW(6))"
)


async def stale_running_tasks(engine: AsyncEngine, idle_since: datetime) -> list[int]:
    """Running tasks untouched since ``idle_since`` with no live chapter claim (MySQL)."""
    async with engine.connect() as conn:
        return [int(r[0]) for r in await conn.execute(_STALE_TASKS, {"idle_since": idle_since})]


async def audit_counters(engine: AsyncEngine, since: datetime) -> list[int]:
    """Recount finished tasks touched since ``since``; fix counters that disagree.

    A task's counters are exact while only kgworker writes them, but an old chaishu worker
    committing a chapter late (docs/chaishu-compat.md §7) adds to them its own way; this
    makes the totals agree with the chapter rows again. Returns the tasks corrected.
    """
    async with engine.connect() as conn:
        ids = [int(r[0]) for r in await conn.execute(
            select(T.id).where(T.status.in_((TaskStatus.COMPLETED, TaskStatus.FAILED)),
                               T.updated_at >= since)
        )]
    fixed: list[int] = []
    for task_id in ids:

        async def work(conn: AsyncConnection, task_id: int = task_id) -> bool:
            task = await lock_task(conn, task_id)
            if task is None or task.status not in (TaskStatus.COMPLETED, TaskStatus.FAILED):
                return False
            progress = await recount(conn, task_id, task.status)
            failed = progress.failed + (
                progress.pending if task.status == TaskStatus.FAILED else 0)
            stored = (task.total_chapters, task.completed_chapters, task.failed_chapters,
                      task.total_entities, task.total_relations)
            if stored == (progress.total, progress.completed, failed, progress.entities,
                          progress.relations):
                return False
            await store_counters(conn, progress, failed_chapters=failed)
            return True

        if await in_transaction(read_committed(engine), work):
            log.warning("task counters disagreed with its chapter rows: recounted",
                        extra={"task_id": task_id})
            fixed.append(task_id)
    return fixed
