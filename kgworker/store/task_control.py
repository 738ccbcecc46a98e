"""Task control outside the chapter flow: restart, auto-retry, and (re-)queueing.

Split from :mod:`kgworker.store.tasks` (the lifecycle proper). Both transitions reset rows
under the task row lock first and only then push the chaishu queue item, so a worker can
never pick up a task that is still half reset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import ChapterStatus, TaskStatus
from kgworker.keys import queue_key
from kgworker.queue.connection import RedisClient
from kgworker.store.schema.chaishu import (
    KnowledgeGraphChapterStatus,
    KnowledgeGraphConfig,
    KnowledgeGraphTask,
)
from kgworker.store.schema.ours import ChapterClaim
from kgworker.store.tasks import lock_task, recount, store_counters
from kgworker.store.txn import in_transaction, read_committed

log = logging.getLogger(__name__)

T = KnowledgeGraphTask
CS = KnowledgeGraphChapterStatus


async def queue_provider(conn: AsyncConnection, task: Row[Any]) -> str:
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


async def enqueue(redis: RedisClient, task_id: int, provider: str) -> None:
    """RPUSH the chaishu queue item, exactly as the producer writes it."""
    item = json.dumps({"task_id": task_id, "provider": provider})
    await redis.rpush(queue_key(provider), item)


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


#: Statuses a task can be restarted from.
RESTARTABLE = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)

#: Task columns a retry or restart clears.
CLEARED_ERRORS: dict[str, Any] = {
    "error_message": None, "last_error_chapter_id": None, "failed_at": None,
    "retry_scheduled_at": None,
}


async def restart_task(
    engine: AsyncEngine,
    redis: RedisClient,
    task_id: int,
    delete_graph: Callable[[int], Awaitable[object]],
) -> bool:
    """Restart a completed/failed/cancelled task: graph removed, chapters pending, re-queued.

    The graph goes first, while the task is still finished and no worker writes for it;
    only then does the task become claimable again.
    """
    async with engine.connect() as conn:
        status = await conn.scalar(select(T.status).where(T.id == task_id))
    if status not in RESTARTABLE:
        return False
    await delete_graph(task_id)

    async def work(conn: AsyncConnection) -> str | None:
        task = await lock_task(conn, task_id)
        if task is None or task.status not in RESTARTABLE:
            return None
        await reset_chapters(conn, task_id, (ChapterStatus.COMPLETED, ChapterStatus.FAILED,
                                              ChapterStatus.RUNNING, ChapterStatus.SKIPPED))
        progress = await recount(conn, task_id, TaskStatus.CREATED)
        await store_counters(
            conn, progress, status=TaskStatus.CREATED, current_chapter_id=None, started_at=None,
            completed_at=None, paused_at=None, **CLEARED_ERRORS,
        )
        return await queue_provider(conn, task)

    provider = await in_transaction(read_committed(engine), work)
    if provider is None:
        return False
    await enqueue(redis, task_id, provider)
    return True


async def retry_due_tasks(engine: AsyncEngine, redis: RedisClient) -> list[int]:
    """Auto-retry: failed tasks whose retry_scheduled_at has come are reset and re-queued."""
    async with engine.connect() as conn:
        due = list(
            (
                await conn.execute(
                    select(T.id).where(
                        T.status == TaskStatus.FAILED,
                        T.auto_retry_enabled.is_(True),
                        T.retry_scheduled_at <= chaishu_now(),
                    )
                )
            ).scalars()
        )
    retried: list[int] = []
    for task_id in due:

        async def work(conn: AsyncConnection, task_id: int = task_id) -> str | None:
            task = await lock_task(conn, task_id)
            if task is None or task.status != TaskStatus.FAILED or task.retry_scheduled_at is None:
                return None
            await reset_chapters(conn, task_id, (ChapterStatus.FAILED, ChapterStatus.RUNNING))
            progress = await recount(conn, task_id, TaskStatus.CREATED)
            await store_counters(
                conn, progress, status=TaskStatus.CREATED, retry_count=(task.retry_count or 0) + 1,
                **CLEARED_ERRORS,
            )
            return await queue_provider(conn, task)

        provider = await in_transaction(read_committed(engine), work)
        if provider is not None:
            await enqueue(redis, task_id, provider)
            log.info("auto-retry re-queued task", extra={"task_id": task_id})
            retried.append(task_id)
    return retried
