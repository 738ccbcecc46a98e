"""``kgworker task retry|cancel|restart``: operator transitions of one chaishu task.

Built on the pipeline's task functions (row lock, recount, queue provider, restart), so a
manual transition obeys the same rules as the worker's own: counters recounted under the
row lock, graph data removed by task id before a restart makes the task claimable again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.config import Settings
from kgworker.observe.control import ControlError
from kgworker.queue.connection import RedisClient

RETRYABLE = ("failed", "paused")
CANCELLABLE = ("created", "running", "paused", "failed")
RESTARTABLE = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class TaskChange:
    task_id: int
    before: str
    after: str
    provider: str | None = None  #: the queue it was pushed onto, if any
    detail: str = ""


async def _current(engine: AsyncEngine, task_id: int) -> tuple[str, int]:
    from sqlalchemy import select

    from kgworker.store.schema.chaishu import KnowledgeGraphTask as T

    async with engine.connect() as conn:
        row = (await conn.execute(select(T.status, T.novel_id).where(T.id == task_id))).first()
    if row is None:
        raise ControlError(f"task {task_id} does not exist", 404)
    return str(row[0]), int(row[1])


async def retry_task(engine: AsyncEngine, redis: RedisClient, task_id: int) -> TaskChange:
    """failed/paused → created: failed and orphaned chapters back to pending, re-queued."""
    from kgworker.domain.status import ChapterStatus, TaskStatus
    from kgworker.store import tasks
    from kgworker.store.txn import in_transaction, read_committed

    before, _ = await _current(engine, task_id)
    if before not in RETRYABLE:
        raise ControlError(
            f"task {task_id} is {before}: only a failed or paused task can be retried"
            + (" (use `task restart` to run a finished task again)" if before != "running" else ""),
            409,
        )

    async def work(conn: AsyncConnection) -> str | None:
        task = await tasks.lock_task(conn, task_id)
        if task is None or task.status not in RETRYABLE:
            return None
        await tasks._reset_chapters(conn, task_id, (ChapterStatus.FAILED, ChapterStatus.RUNNING))
        progress = await tasks.recount(conn, task_id, TaskStatus.CREATED)
        await tasks.store_counters(
            conn, progress, status=TaskStatus.CREATED, paused_at=None, **tasks._CLEARED_ERRORS
        )
        return await tasks.queue_provider(conn, task)

    provider = await in_transaction(read_committed(engine), work)
    if provider is None:
        raise ControlError(f"task {task_id} changed while retrying; look again", 409)
    await tasks.enqueue(redis, task_id, provider)
    return TaskChange(task_id, before, TaskStatus.CREATED, provider)


async def cancel_task(engine: AsyncEngine, task_id: int) -> TaskChange:
    """→ cancelled: workers stop between chapters and drop its queue items."""
    from kgworker.domain.clock import chaishu_now
    from kgworker.domain.status import TaskStatus
    from kgworker.store import tasks
    from kgworker.store.schema.chaishu import KnowledgeGraphTask
    from kgworker.store.txn import in_transaction, read_committed

    async def work(conn: AsyncConnection) -> str:
        task = await tasks.lock_task(conn, task_id)
        if task is None:
            raise ControlError(f"task {task_id} does not exist", 404)
        if task.status not in CANCELLABLE:
            raise ControlError(f"task {task_id} is {task.status}: nothing to cancel", 409)
        await conn.execute(
            update(KnowledgeGraphTask)
            .where(KnowledgeGraphTask.id == task_id)
            .values(status=TaskStatus.CANCELLED, updated_at=chaishu_now())
        )
        return str(task.status)

    before = await in_transaction(read_committed(engine), work)
    detail = "running chapters finish, no new chapter starts" if before == "running" else ""
    return TaskChange(task_id, before, TaskStatus.CANCELLED, None, detail)


async def restart_task(
    settings: Settings, engine: AsyncEngine, redis: RedisClient, task_id: int
) -> TaskChange:
    """completed/failed/cancelled → created: graph removed by task id, all chapters pending."""
    from kgworker.store import tasks
    from kgworker.store.graph import create_driver
    from kgworker.store.graph_writer import GraphWriter

    before, novel_id = await _current(engine, task_id)
    if before not in RESTARTABLE:
        raise ControlError(
            f"task {task_id} is {before}: only a completed, failed or cancelled task can be "
            "restarted (cancel it first)",
            409,
        )
    removed = 0
    driver = create_driver(settings)
    try:
        writer = GraphWriter(driver, database=settings.neo4j_database)

        async def delete_graph(tid: int) -> object:
            nonlocal removed
            removed = await writer.delete_task(tid, novel_id)
            return removed

        ok = await tasks.restart_task(engine, redis, task_id, delete_graph)
    finally:
        await driver.close()
    if not ok:
        raise ControlError(f"task {task_id} changed while restarting; look again", 409)
    after, _ = await _current(engine, task_id)
    return TaskChange(task_id, before, after, None, f"{removed} graph items removed or updated")
