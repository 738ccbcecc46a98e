"""``kgworker task retry|cancel|restart``: operator transitions of one chaishu task.

Built on the store's task transitions (row lock, recount, queue provider), so a manual
transition obeys the same rules as the worker's own: counters recounted under the row
lock, graph data removed by task id before a restart makes the task claimable again, and
the queue item pushed only after the commit. :func:`restart_task` is the one restart of
kgworker (the CLI, the API and the tests use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.control.errors import ControlError
from kgworker.domain.status import TaskStatus
from kgworker.queue.connection import RedisClient
from kgworker.queue.producer import push_task
from kgworker.store import task_reset


class TaskGraph(Protocol):
    """What a restart needs of a graph store: delete one task's data from one novel."""

    async def delete_task(self, task_id: int, novel_id: int) -> int: ...


@dataclass(frozen=True)
class TaskChange:
    task_id: int
    before: str
    after: str
    provider: str | None = None  #: the queue it was pushed onto, if any
    detail: str = ""


async def _current(engine: AsyncEngine, task_id: int) -> tuple[str, int]:
    found = await task_reset.task_status(engine, task_id)
    if found is None:
        raise ControlError(f"task {task_id} does not exist", 404)
    return found


async def retry_task(engine: AsyncEngine, redis: RedisClient, task_id: int) -> TaskChange:
    """failed/paused → created: failed and orphaned chapters back to pending, re-queued."""
    before, _ = await _current(engine, task_id)
    if before not in task_reset.RETRYABLE:
        hint = "" if before == TaskStatus.RUNNING else (
            " (use `task restart` to run a finished task again)")
        raise ControlError(
            f"task {task_id} is {before}: only a failed or paused task can be retried" + hint,
            409,
        )
    provider = await task_reset.reset_for_retry(engine, task_id)
    if provider is None:
        raise ControlError(f"task {task_id} changed while retrying; look again", 409)
    await push_task(redis, task_id, provider)
    return TaskChange(task_id, before, TaskStatus.CREATED, provider)


async def cancel_task(engine: AsyncEngine, task_id: int) -> TaskChange:
    """→ cancelled: workers stop between chapters and drop its queue items."""
    before = await task_reset.cancel(engine, task_id)
    if before is None:
        raise ControlError(f"task {task_id} does not exist", 404)
    if before not in task_reset.CANCELLABLE:
        raise ControlError(f"task {task_id} is {before}: nothing to cancel", 409)
    running = before == TaskStatus.RUNNING
    detail = "running chapters finish, no new chapter starts" if running else ""
    return TaskChange(task_id, before, TaskStatus.CANCELLED, None, detail)


async def restart_task(
    engine: AsyncEngine, redis: RedisClient, graph: TaskGraph, task_id: int
) -> TaskChange:
    """completed/failed/cancelled → created: graph removed by task id, all chapters pending.

    The graph goes first, while the task is still finished and no worker writes for it;
    only then does the task become claimable again, and only then is it queued.
    """
    before, novel_id = await _current(engine, task_id)
    if before not in task_reset.RESTARTABLE:
        raise ControlError(
            f"task {task_id} is {before}: only a completed, failed or cancelled task can be "
            "restarted (cancel it first)",
            409,
        )
    removed = await graph.delete_task(task_id, novel_id)
    provider = await task_reset.reset_for_restart(engine, task_id)
    if provider is None:
        raise ControlError(f"task {task_id} changed while restarting; look again", 409)
    await push_task(redis, task_id, provider)
    return TaskChange(task_id, before, TaskStatus.CREATED, provider,
                      f"{removed} graph items removed or updated")
