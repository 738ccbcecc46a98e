"""Enqueueing a task as the chaishu producer does, with checks that explain.

Every function raises :class:`ControlError` with a sentence an operator can act on (wrong
id, unknown provider, task finished), so the CLI prints it and exits 1 and the API answers
4xx with the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.control.errors import ControlError
from kgworker.domain.status import FINISHED_TASK
from kgworker.keys import queue_key
from kgworker.queue.connection import RedisClient
from kgworker.queue.producer import push_task
from kgworker.store import catalog
from kgworker.store.tasks import queue_provider_of

PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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
    return await catalog.provider_names(engine) | {"rules"}


async def create_task_row(engine: AsyncEngine, novel_id: int, *, use_ai: bool) -> int:
    """A chaishu task for every chapter of ``novel_id``, status ``created``."""
    found = await catalog.novel_summary(engine, novel_id)
    if found is None:
        raise ControlError(f"novel {novel_id} does not exist", 404)
    title, has_chapters = found
    if not has_chapters:
        raise ControlError(f"novel {novel_id} has no chapters", 409)
    return await catalog.insert_task(engine, novel_id, title, use_ai=use_ai)


async def enqueue_task(
    redis: RedisClient,
    engine: AsyncEngine | None,
    task_id: int | None,
    *,
    provider: str | None = None,
    novel_id: int | None = None,
) -> Enqueued:
    """RPUSH a chaishu queue item for a task (created first from ``novel_id`` if asked)."""
    if provider is not None:
        provider = check_provider_name(provider)
    created = False
    if engine is not None:
        if novel_id is not None and task_id is None:
            task_id = await create_task_row(engine, novel_id, use_ai=provider != "rules")
            created = True
        if task_id is None:
            raise ControlError("give a task id or --novel")
        task = await catalog.task_row(engine, task_id)
        if task is None:
            raise ControlError(f"task {task_id} does not exist", 404)
        if task.status in FINISHED_TASK:
            raise ControlError(
                f"task {task_id} is {task.status}: a worker would drop it "
                "(use `task restart` to run it again)",
                409,
            )
        if provider is None:
            provider = await queue_provider_of(engine, task_id) or "rules"
        if provider.lower() not in await known_providers(engine):
            raise ControlError(f"unknown provider {provider!r} (not in ai_providers)", 404)
    if task_id is None or task_id <= 0:
        raise ControlError("task id must be a positive integer")
    if provider is None:
        raise ControlError("no provider given and no database to look it up")
    length = await push_task(redis, task_id, provider)
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
