"""The producer API (``from kgworker import enqueue_task``) on the real stores, and the
promise that ``import kgworker`` loads no store driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

import kgworker
from kgworker.config import Settings, settings_to_env
from kgworker.queue.connection import RedisClient
from kgworker.store.schema.chaishu import KnowledgeGraphTask as T

from .conftest import Book

HEAVY = ("sqlalchemy", "redis", "neo4j", "aiohttp", "httpx", "asyncmy", "typer", "pydantic")


def test_import_kgworker_is_cheap() -> None:
    probe = (f"import sys, kgworker; heavy = {HEAVY!r}; "
             "print([m for m in heavy if m in sys.modules]); "
             "from kgworker import enqueue_task, ControlError; "
             "print(enqueue_task.__module__, ControlError.__module__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["[]", "kgworker.control.client kgworker.control.errors"], out
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        kgworker.nosuch  # noqa: B018


async def _queued(redis: RedisClient, provider: str) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in await redis.lrange(f"kg:ai_queue:{provider}", 0, -1)]


async def test_create_enqueue_cancel_retry_restart(
    settings: Settings, redis: RedisClient, mysql_engine: AsyncEngine, chaishu: Book,
) -> None:
    made = await kgworker.create_task(chaishu.novel_id, provider="rules", settings=settings)
    assert made.created and made.provider == "rules" and made.queue_length == 1
    async with mysql_engine.connect() as conn:
        row = (await conn.execute(select(T).where(T.id == made.task_id))).one()
    assert (row.status, row.use_ai, row.novel_id) == ("created", False, chaishu.novel_id)
    again = await kgworker.enqueue_task(chaishu.task_id, settings=settings)
    assert (again.provider, again.created) == ("deepseek", False)  # the task's own provider
    assert await _queued(redis, "deepseek") == [{"task_id": chaishu.task_id,
                                                  "provider": "deepseek"}]
    cancelled = await kgworker.cancel_task(made.task_id, settings=settings)
    assert (cancelled.before, cancelled.after) == ("created", "cancelled")
    with pytest.raises(kgworker.ControlError, match="only a failed or paused task"):
        await kgworker.retry_task(made.task_id, settings=settings)
    restarted = await kgworker.restart_task(made.task_id, settings=settings)
    assert (restarted.before, restarted.after, restarted.provider) == (
        "cancelled", "created", "rules")
    async with mysql_engine.begin() as conn:
        await conn.execute(update(T).where(T.id == made.task_id).values(status="failed"))
    retried = await kgworker.retry_task(made.task_id, settings=settings)
    assert (retried.before, retried.after, retried.provider) == ("failed", "created", "rules")
    assert [item["task_id"] for item in await _queued(redis, "rules")] == [made.task_id] * 3
    with pytest.raises(kgworker.ControlError, match="task 987654 does not exist") as missing:
        await kgworker.enqueue_task(987654, settings=settings)
    assert missing.value.status == 404
    with pytest.raises(kgworker.ControlError, match="novel 987654 does not exist"):
        await kgworker.create_task(987654, settings=settings)


async def test_settings_come_from_the_environment_when_not_given(
    settings: Settings, redis: RedisClient, chaishu: Book, monkeypatch: pytest.MonkeyPatch,
    tmp_cwd: object,
) -> None:
    for name in [n for n in os.environ if n.startswith(("REDIS_", "DB_", "DATABASE_URL"))]:
        monkeypatch.delenv(name)
    for name, value in settings_to_env(settings).items():
        monkeypatch.setenv(name, value)
    done = await kgworker.enqueue_task(chaishu.task_id, provider="rules")
    assert done.queue == "kg:ai_queue:rules"
    assert await _queued(redis, "rules") == [{"task_id": chaishu.task_id, "provider": "rules"}]
