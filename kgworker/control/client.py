"""The producer API: enqueue, create, cancel, retry and restart tasks from any application.

For programs that are not chaishu (a web backend, a notebook, a cron script), as arq,
RQ and Celery give their producers: settings in (or read from the environment and
``.env`` like every command), clients opened and closed here, and the actions themselves
are the ones of :mod:`kgworker.control` — the CLI and the HTTP API use the same.
``import kgworker`` stays cheap: :mod:`kgworker` imports this module on first use.

    import asyncio
    import kgworker

    done = asyncio.run(kgworker.create_task(novel_id=7, provider="rules"))
    print(done.task_id, done.queue_length)

Every function raises :class:`~kgworker.control.errors.ControlError` with a sentence when
the action is refused (no such task, unknown provider, wrong state), and the drivers'
errors when a store cannot be reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings, load_settings
from kgworker.control import enqueue as _enqueue
from kgworker.control import tasks as _tasks
from kgworker.control.enqueue import Enqueued
from kgworker.control.tasks import TaskChange
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.store.mysql import create_engine


@asynccontextmanager
async def _stores(settings: Settings | None) -> AsyncIterator[tuple[Settings, RedisClient,
                                                                     AsyncEngine]]:
    settings = settings if settings is not None else load_settings()
    redis = create_redis(settings, socket_timeout=10)
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        yield settings, redis, engine
    finally:
        await redis.aclose()
        await engine.dispose()


async def enqueue_task(
    task_id: int, *, provider: str | None = None, settings: Settings | None = None
) -> Enqueued:
    """Queue an existing ``knowledge_graph_tasks`` row (on its own provider by default)."""
    async with _stores(settings) as (_, redis, engine):
        return await _enqueue.enqueue_task(redis, engine, task_id, provider=provider)


async def create_task(
    novel_id: int, *, provider: str | None = None, settings: Settings | None = None
) -> Enqueued:
    """A new task over every chapter of ``novel_id``, queued at once (``created`` is True).

    ``provider="rules"`` extracts offline (the row gets ``use_ai = false``); any other
    provider, or None for the default config's, uses a model.
    """
    async with _stores(settings) as (_, redis, engine):
        return await _enqueue.enqueue_task(redis, engine, None, provider=provider,
                                           novel_id=novel_id)


async def cancel_task(task_id: int, *, settings: Settings | None = None) -> TaskChange:
    """→ cancelled: workers stop it between chapters."""
    async with _stores(settings) as (_, _redis, engine):
        return await _tasks.cancel_task(engine, task_id)


async def retry_task(task_id: int, *, settings: Settings | None = None) -> TaskChange:
    """failed or paused → created: the failed chapters again, queued."""
    async with _stores(settings) as (_, redis, engine):
        return await _tasks.retry_task(engine, redis, task_id)


async def restart_task(task_id: int, *, settings: Settings | None = None) -> TaskChange:
    """completed, failed or cancelled → created: its graph removed, every chapter again."""
    from kgworker.store.graph import create_driver
    from kgworker.store.graph_writer import GraphWriter

    async with _stores(settings) as (settings, redis, engine):
        driver = create_driver(settings)
        try:
            graph = GraphWriter(driver, database=settings.neo4j_database)
            return await _tasks.restart_task(engine, redis, graph, task_id)
        finally:
            await driver.close()
