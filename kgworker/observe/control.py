"""Operator actions shared by the CLI and the HTTP API: enqueue, with checks that explain.

Every function raises :class:`ControlError` with a sentence an operator can act on (wrong
id, unknown provider, task finished), so the CLI prints it and exits 1 and the API answers
4xx with the same text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.keys import queue_key
from kgworker.queue.connection import RedisClient

PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ControlError(Exception):
    """A refused operator action; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Enqueued:
    task_id: int
    provider: str
    queue: str
    queue_length: int
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "provider": self.provider,
            "queue": self.queue,
            "queue_length": self.queue_length,
            "created": self.created,
        }


def check_provider_name(name: str) -> str:
    if not PROVIDER_NAME.match(name):
        raise ControlError(f"invalid provider name {name!r}")
    return name


async def known_providers(engine: AsyncEngine) -> set[str]:
    """Names in ``ai_providers`` (lower-cased) plus ``rules``."""
    from kgworker.store.schema.chaishu import AIProvider

    async with engine.connect() as conn:
        names = (await conn.execute(select(AIProvider.name))).scalars().all()
    return {str(n).lower() for n in names} | {"rules"}


async def create_task_row(engine: AsyncEngine, novel_id: int, *, use_ai: bool) -> int:
    """A chaishu task for every chapter of ``novel_id``, status ``created``."""
    from kgworker.domain.clock import chaishu_now
    from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphTask, Novel

    async with engine.begin() as conn:
        title = await conn.scalar(select(Novel.title).where(Novel.id == novel_id))
        if title is None:
            raise ControlError(f"novel {novel_id} does not exist", 404)
        chapters = await conn.scalar(
            select(Chapter.id).where(Chapter.novel_id == novel_id).limit(1)
        )
        if chapters is None:
            raise ControlError(f"novel {novel_id} has no chapters", 409)
        now = chaishu_now()
        result = await conn.execute(
            insert(KnowledgeGraphTask).values(
                task_name=f"{title} knowledge graph",
                novel_id=novel_id,
                chapter_ids=None,
                use_ai=use_ai,
                status="created",
                created_at=now,
                updated_at=now,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


async def enqueue_task(
    redis: RedisClient,
    engine: AsyncEngine | None,
    task_id: int | None,
    *,
    provider: str | None = None,
    novel_id: int | None = None,
) -> Enqueued:
    """RPUSH a chaishu queue item for a task (created first from ``novel_id`` if asked)."""
    from kgworker.queue.provider_queue import ProviderQueue
    from kgworker.store.schema.chaishu import KnowledgeGraphTask as T

    if provider is not None:
        provider = check_provider_name(provider)
    created = False
    if engine is not None:
        if novel_id is not None and task_id is None:
            task_id = await create_task_row(engine, novel_id, use_ai=provider != "rules")
            created = True
        if task_id is None:
            raise ControlError("give a task id or --novel")
        async with engine.connect() as conn:
            task = (await conn.execute(select(T).where(T.id == task_id))).first()
            if task is None:
                raise ControlError(f"task {task_id} does not exist", 404)
            if task.status in ("completed", "cancelled"):
                raise ControlError(
                    f"task {task_id} is {task.status}: a worker would drop it "
                    "(use `task restart` to run it again)",
                    409,
                )
            if provider is None:
                from kgworker.store.tasks import queue_provider

                provider = await queue_provider(conn, task)
        if provider.lower() not in await known_providers(engine):
            raise ControlError(f"unknown provider {provider!r} (not in ai_providers)", 404)
    if task_id is None or task_id <= 0:
        raise ControlError("task id must be a positive integer")
    if provider is None:
        raise ControlError("no provider given and no database to look it up")
    queue = ProviderQueue(redis, provider, node="control", lease_seconds=1, max_stalls=0)
    length = await queue.push({"task_id": task_id, "provider": provider})
    return Enqueued(task_id, provider, queue_key(provider), length, created)


def parse_task_request(body: Any) -> tuple[int, str | None]:
    """Validate the JSON body of ``POST /tasks``: ``{"task_id": int, "provider"?: str}``."""
    if not isinstance(body, dict):
        raise ControlError("expected a JSON object")
    task_id = body.get("task_id")
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id <= 0:
        raise ControlError("task_id must be a positive integer")
    provider = body.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise ControlError("provider must be a string")
    return task_id, provider


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
