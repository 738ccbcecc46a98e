"""Pushing a KG task onto its provider's queue, exactly as the chaishu producer does.

chaishu's ``enqueue_task`` RPUSHes ``{"task_id": N, "provider": NAME}`` onto
``kg:ai_queue:{name.strip().lower()}`` (docs/chaishu-compat.md). Every part of kgworker
that queues a task (operators, auto-retry, recovery, fallback, the demo) goes through
:func:`push_task`, so the item shape has one home.
"""

from __future__ import annotations

import json
from typing import Any

from kgworker.keys import queue_key
from kgworker.queue.connection import RedisClient


def task_item(task_id: int, provider: str, **extra: Any) -> str:
    """The JSON of a queue item; ``extra`` fields ride along (e.g. ``moved_from``)."""
    return json.dumps({"task_id": task_id, "provider": provider, **extra}, ensure_ascii=False)


async def push_task(redis: RedisClient, task_id: int, provider: str, **extra: Any) -> int:
    """RPUSH the item onto ``kg:ai_queue:{provider}``; returns the queue's new length."""
    item = task_item(task_id, provider, **extra)
    return int(await redis.rpush(queue_key(provider.strip()), item))
