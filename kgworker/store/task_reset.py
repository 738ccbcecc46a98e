"""Task transitions outside the chapter flow, in MySQL: restart, retry, auto-retry, cancel.

Each one resets rows under the task row lock and returns the provider whose queue the task
goes back to; the caller pushes the queue item only after the commit
(:func:`kgworker.queue.producer.push_task`), so a worker can never pick up a task that is
still half reset. The lifecycle proper (start, finish, finalise) is :mod:`.tasks`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import ChapterStatus, TaskStatus
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus, KnowledgeGraphTask
from kgworker.store.schema.ours import ChapterClaim
from kgworker.store.tasks import lock_task, queue_provider, recount, store_counters
from kgworker.store.txn import in_transaction, read_committed

log = logging.getLogger(__name__)

T = KnowledgeGraphTask
CS = KnowledgeGraphChapterStatus

#: Statuses a task can be restarted from (rebuilt from scratch).
RESTARTABLE = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
#: Statuses an operator can retry (failed and orphaned chapters back to pending).
RETRYABLE = (TaskStatus.FAILED, TaskStatus.PAUSED)
#: Statuses a task can be cancelled from.
CANCELLABLE = (TaskStatus.CREATED, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.FAILED)
#: Task columns a retry or restart clears.
CLEARED_ERRORS: dict[str, Any] = {
    "error_message": None, "last_error_chapter_id": None, "failed_at": None,
    "retry_scheduled_at": None,
}


async def reset_chapters(conn: AsyncConnection, task_id: int, statuses: Sequence[str]) -> None:
    """Chapters in ``statuses`` back to pending, their claims and attempt counts cleared."""
    await conn.execute(
        update(CS)
        .where(CS.kg_task_id == task_id, CS.status.in_(statuses))
        .values(
            status=ChapterStatus.PENDING, entities_extracted=0, relations_extracted=0,
            error_message=None, started_at=None, completed_at=None, updated_at=chaishu_now(),
        )
    )
    chapter_ids = select(CS.chapter_id).where(
        CS.kg_task_id == task_id, CS.status == ChapterStatus.PENDING
    )
    await conn.execute(
        update(ChapterClaim)
        .where(ChapterClaim.task_id == task_id, ChapterClaim.chapter_id.in_(chapter_ids))
        .values(token=None, owner=None, lease_until=None, attempts=0, last_error=None)
    )


async def task_status(engine: AsyncEngine, task_id: int) -> tuple[str, int] | None:
    """``(status, novel_id)`` of a task, or None when it does not exist."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(T.status, T.novel_id).where(T.id == task_id))).first()
    return None if row is None else (str(row[0]), int(row[1]))


async def reset_for_restart(engine: AsyncEngine, task_id: int) -> str | None:
    """completed/failed/cancelled → created, every chapter pending, counters zeroed.

    Returns the provider to queue on, or None when the task is missing or not restartable
    (anymore). The graph must be removed before (the caller does it while the task is still
    finished and no worker writes for it).
    """

    async def work(conn: AsyncConnection) -> str | None:
        task = await lock_task(conn, task_id)
        if task is None or task.status not in RESTARTABLE:
            return None
        await reset_chapters(conn, task_id, (ChapterStatus.COMPLETED, ChapterStatus.FAILED,
                                              ChapterStatus.RUNNING, ChapterStatus.SKIPPED))
        progress = await recount(conn, task_id, TaskStatus.CREATED)
        await store_counters(
            conn, progress, status=TaskStatus.CREATED, current_chapter_id=None,
            started_at=None, completed_at=None, paused_at=None, **CLEARED_ERRORS,
        )
        return await queue_provider(conn, task)

    return await in_transaction(read_committed(engine), work)


async def reset_for_retry(
    engine: AsyncEngine, task_id: int, *, statuses: Sequence[str] = RETRYABLE,
    scheduled: bool = False,
) -> str | None:
    """A task in ``statuses`` → created: failed and orphaned chapters back to pending.

    ``scheduled`` is the auto-retry: only a task whose retry is due, and ``retry_count``
    grows by one. Returns the provider to queue on, or None when the task changed.
    """

    async def work(conn: AsyncConnection) -> str | None:
        task = await lock_task(conn, task_id)
        if task is None or task.status not in statuses:
            return None
        if scheduled and task.retry_scheduled_at is None:
            return None
        await reset_chapters(conn, task_id, (ChapterStatus.FAILED, ChapterStatus.RUNNING))
        progress = await recount(conn, task_id, TaskStatus.CREATED)
        extra: dict[str, Any] = (
            {"retry_count": (task.retry_count or 0) + 1} if scheduled else {"paused_at": None}
        )
        await store_counters(
            conn, progress, status=TaskStatus.CREATED, **extra, **CLEARED_ERRORS
        )
        return await queue_provider(conn, task)

    return await in_transaction(read_committed(engine), work)


async def due_retries(engine: AsyncEngine) -> list[int]:
    """Failed tasks with auto-retry on whose ``retry_scheduled_at`` has come."""
    async with engine.connect() as conn:
        return list((await conn.execute(
            select(T.id).where(
                T.status == TaskStatus.FAILED,
                T.auto_retry_enabled.is_(True),
                T.retry_scheduled_at <= chaishu_now(),
            )
        )).scalars())


async def cancel(engine: AsyncEngine, task_id: int) -> str | None:
    """→ cancelled (workers stop between chapters); the status it had, or None if missing.

    A task whose status is not in :data:`CANCELLABLE` is left as it is; the returned status
    tells the caller so.
    """

    async def work(conn: AsyncConnection) -> str | None:
        task = await lock_task(conn, task_id)
        if task is None:
            return None
        if task.status in CANCELLABLE:
            await conn.execute(
                update(T).where(T.id == task_id)
                .values(status=TaskStatus.CANCELLED, updated_at=chaishu_now())
            )
        return str(task.status)

    return await in_transaction(read_committed(engine), work)
