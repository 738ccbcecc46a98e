"""The chaishu application's own resets, in raw SQL that knows nothing of ``kgworker_*``.

These are the writes that reach the shared tables from the web app's side during a
migration window: restart, retry of failed chapters, startup recovery and task deletion.
None of them checks the task's status first (the app only offers the buttons for finished
tasks, but a user and a worker race all the time), so tests can fire them at any moment.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from neo4j import AsyncDriver
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .codec import RULES, local_now, queue_item, queue_key

#: Remove the task id from every list; nodes left with an empty list go, with their edges.
#: (Scoped to the task's novel: the tests share one Neo4j, and task ids of different test
#: databases collide; chaishu's own database has one task per id.)
PURGE_CYPHER = """
MATCH (n) WHERE $task_id IN n.task_id AND (n.novel_id = $novel_id OR n.id = $novel_id)
WITH n, [x IN n.task_id WHERE x <> $task_id] AS rest
SET n.task_id = rest
WITH n, rest WHERE size(rest) = 0
DETACH DELETE n
RETURN count(*) AS deleted
"""


async def choose_provider(
    conn: AsyncConnection, use_ai: bool, *, exclude: Iterable[str] = ()
) -> str:
    """The provider a task is queued to: ``rules`` without AI, else the default config's
    provider while it is active, else the first active provider by id."""
    if not use_ai:
        return RULES
    skip = {name.lower() for name in exclude}
    active = [
        str(name)
        for (name,) in await conn.execute(
            text("SELECT name FROM ai_providers WHERE is_active = 1 ORDER BY id")
        )
        if str(name).lower() not in skip
    ]
    preferred = (await conn.execute(text(
        "SELECT ai_provider FROM knowledge_graph_configs WHERE is_default = 1 "
        "ORDER BY id LIMIT 1"
    ))).scalar()
    for name in active:
        if preferred is not None and name.lower() == str(preferred).lower():
            return name
    if active:
        return active[0]
    raise LookupError("no active ai_providers row to queue the task to")


async def requeue(redis: Any, task_id: int, provider: str) -> None:
    """RPUSH the producer's item (the producer's side of the queue)."""
    await redis.rpush(queue_key(provider), queue_item(task_id, provider))


async def purge_task_graph(
    driver: AsyncDriver, task_id: int, novel_id: int, *, database: str | None = None
) -> int:
    """Delete a task's graph data by task id; returns how many nodes were deleted."""
    result = await driver.execute_query(PURGE_CYPHER, task_id=task_id, novel_id=novel_id,
                                        database_=database)
    return int(result.records[0]["deleted"]) if result.records else 0


async def _use_ai(conn: AsyncConnection, task_id: int) -> bool:
    value = (await conn.execute(
        text("SELECT use_ai FROM knowledge_graph_tasks WHERE id = :id"), {"id": task_id}
    )).scalar()
    if value is None:
        raise LookupError(f"task {task_id} does not exist")
    return bool(value)


async def _novel_of(conn: AsyncConnection, task_id: int) -> int:
    value = (await conn.execute(
        text("SELECT novel_id FROM knowledge_graph_tasks WHERE id = :id"), {"id": task_id}
    )).scalar()
    return -1 if value is None else int(value)


async def restart_task(
    engine: AsyncEngine,
    redis: Any,
    driver: AsyncDriver,
    task_id: int,
    *,
    provider: str | None = None,
    database: str | None = None,
) -> str:
    """The app's restart: task → created, every chapter row → pending, counters zeroed,
    graph purged, item re-queued. Returns the provider it was queued to."""
    now = local_now()
    async with engine.begin() as conn:
        target = provider or await choose_provider(conn, await _use_ai(conn, task_id))
        novel_id = await _novel_of(conn, task_id)
        await conn.execute(text(
            "UPDATE knowledge_graph_tasks SET status = 'created', completed_chapters = 0, "
            "failed_chapters = 0, skipped_chapters = 0, total_entities = 0, "
            "total_relations = 0, current_chapter_id = NULL, error_message = NULL, "
            "last_error_chapter_id = NULL, started_at = NULL, completed_at = NULL, "
            "failed_at = NULL, retry_scheduled_at = NULL, paused_at = NULL, "
            "updated_at = :now WHERE id = :id"
        ), {"id": task_id, "now": now})
        await conn.execute(text(
            "UPDATE knowledge_graph_chapter_status SET status = 'pending', "
            "entities_extracted = 0, relations_extracted = 0, error_message = NULL, "
            "started_at = NULL, completed_at = NULL, updated_at = :now "
            "WHERE kg_task_id = :id"
        ), {"id": task_id, "now": now})
    await purge_task_graph(driver, task_id, novel_id, database=database)
    await requeue(redis, task_id, target)
    return target


async def retry_failed_chapters(
    engine: AsyncEngine, redis: Any, task_id: int, *, provider: str | None = None
) -> int:
    """The app's retry: failed chapter rows → pending, task → created and re-queued.
    Returns how many chapter rows were reset (the item is queued even when none were)."""
    now = local_now()
    async with engine.begin() as conn:
        target = provider or await choose_provider(conn, await _use_ai(conn, task_id))
        reset = await conn.execute(text(
            "UPDATE knowledge_graph_chapter_status SET status = 'pending', "
            "error_message = NULL, started_at = NULL, completed_at = NULL, "
            "updated_at = :now WHERE kg_task_id = :id AND status = 'failed'"
        ), {"id": task_id, "now": now})
        await conn.execute(text(
            "UPDATE knowledge_graph_tasks SET status = 'created', failed_chapters = 0, "
            "error_message = NULL, last_error_chapter_id = NULL, failed_at = NULL, "
            "retry_scheduled_at = NULL, updated_at = :now WHERE id = :id"
        ), {"id": task_id, "now": now})
    await requeue(redis, task_id, target)
    return int(reset.rowcount)


async def recover_interrupted(
    engine: AsyncEngine, *, task_ids: Iterable[int] | None = None
) -> int:
    """The app's startup recovery: chapter rows left ``running`` → pending (of the given
    tasks, or of every task). The task rows are left as they are. Returns rows reset."""
    sql = (
        "UPDATE knowledge_graph_chapter_status SET status = 'pending', started_at = NULL, "
        "updated_at = :now WHERE status = 'running'"
    )
    params: dict[str, Any] = {"now": local_now()}
    statement = text(sql)
    if task_ids is not None:
        ids = list(task_ids)
        if not ids:
            return 0
        statement = text(sql + " AND kg_task_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        params["ids"] = ids
    async with engine.begin() as conn:
        result = await conn.execute(statement, params)
    return int(result.rowcount)


async def delete_task(
    engine: AsyncEngine, driver: AsyncDriver, task_id: int, *, database: str | None = None
) -> bool:
    """The app's delete: chapter rows and the task row removed, then the graph purged.
    Returns whether a task row was there."""
    async with engine.begin() as conn:
        novel_id = await _novel_of(conn, task_id)
        await conn.execute(
            text("DELETE FROM knowledge_graph_chapter_status WHERE kg_task_id = :id"),
            {"id": task_id},
        )
        deleted = await conn.execute(
            text("DELETE FROM knowledge_graph_tasks WHERE id = :id"), {"id": task_id}
        )
    await purge_task_graph(driver, task_id, novel_id, database=database)
    return bool(deleted.rowcount)
