"""The real backlog of each provider, in chapters: what KEDA scales the fleet on.

A claimed book leaves ``kg:ai_queue:P`` at once while its chapters are still being worked
by the fleet, so the queue length reads 0 all through a large book. The backlog counts
chapters instead: those not done yet (pending or running) of the tasks open on ``P`` —
the task ids in ``{kg:ai_queue:P}:open``, and in its claims (a node holds the item and
is about to open it) — plus the chapters of the tasks still waiting in the queue (the
first :data:`QUEUE_SCAN` items: past that the scaler is at its maximum anyway). A
waiting task with chapter rows (a retry, a restart) counts its pending rows; one without
(never started) counts its ``chapter_ids``, or its novel's chapters. Each task counts
once, for the first provider that lists it, open or claimed before queued.

Why every node counts it from MySQL (on scrape, at most every few seconds) rather than one
node publishing it in Redis: the series must not vanish when that one node dies or rolls —
KEDA reads a missing series as 0 and would shrink the fleet mid-book — and nodes reading
the same rows report the same fleet-wide number, which the scaler's ``max()`` takes. It
costs one grouped query on the chapter rows' task index (two more for never-started tasks)
per node and interval.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.status import FINISHED_TASK, ChapterStatus
from kgworker.keys import ProviderKeys, queue_key
from kgworker.queue.connection import RedisClient
from kgworker.queue.provider_queue import open_task_ids
from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphTask
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus as CS

#: Queue items looked at per provider.
QUEUE_SCAN = 1000
LEFT = (ChapterStatus.PENDING.value, ChapterStatus.RUNNING.value)


def _task_id(raw: bytes | str) -> int | None:
    try:
        value = json.loads(raw)["task_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _claim_task_id(value: bytes | str) -> int | None:
    """The task of a claim entry (``{"raw": <the queue item>, ...}``)."""
    try:
        raw = json.loads(value)["raw"]
    except (ValueError, TypeError, KeyError):
        return None
    return _task_id(raw) if isinstance(raw, str) else None


async def _task_ids(redis: RedisClient, providers: Iterable[str]) -> dict[int, str]:
    """Task id → the provider it counts for: open or claimed tasks first, then waiting ones."""
    names = list(providers)
    owner: dict[int, str] = {}
    for provider in names:
        for task_id in sorted(await open_task_ids(redis, provider)):
            owner.setdefault(task_id, provider)
        for value in await redis.hvals(ProviderKeys.for_provider(provider).claims):
            claimed = _claim_task_id(value)
            if claimed is not None:
                owner.setdefault(claimed, provider)
    for provider in names:
        for raw in await redis.lrange(queue_key(provider), 0, QUEUE_SCAN - 1):
            waiting = _task_id(raw)
            if waiting is not None:
                owner.setdefault(waiting, provider)
    return owner


async def _chapters_left(engine: AsyncEngine, task_ids: list[int]) -> dict[int, int]:
    """Pending or running chapter rows per task, for the tasks that have rows."""
    query = (
        select(CS.kg_task_id, func.sum(case((CS.status.in_(LEFT), 1), else_=0)))
        .where(CS.kg_task_id.in_(task_ids))
        .group_by(CS.kg_task_id)
    )
    async with engine.connect() as conn:
        return {int(task): int(left or 0) for task, left in (await conn.execute(query)).all()}


async def _not_started(engine: AsyncEngine, task_ids: list[int]) -> dict[int, int]:
    """Chapters of tasks without chapter rows yet: their ``chapter_ids``, else the novel's."""
    T = KnowledgeGraphTask
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(T.id, T.status, T.chapter_ids, T.novel_id).where(T.id.in_(task_ids))
        )).all()
        novels = {int(row.novel_id) for row in rows
                  if row.status not in FINISHED_TASK and not row.chapter_ids}
        per_novel: dict[int, int] = {}
        if novels:
            counted = await conn.execute(
                select(Chapter.novel_id, func.count()).where(Chapter.novel_id.in_(novels))
                .group_by(Chapter.novel_id)
            )
            per_novel = {int(novel): int(n) for novel, n in counted.all()}
    chapters: dict[int, int] = {}
    for row in rows:
        if row.status in FINISHED_TASK:  # a worker drops its queue item: nothing to do
            continue
        ids = row.chapter_ids
        if isinstance(ids, str):
            try:
                ids = json.loads(ids)
            except ValueError:
                ids = None
        chapters[int(row.id)] = len(ids) if ids else per_novel.get(int(row.novel_id), 0)
    return chapters


async def read_backlog(
    redis: RedisClient, engine: AsyncEngine, providers: Iterable[str]
) -> dict[str, int]:
    """Chapters left per provider (every given provider gets a number, 0 included)."""
    names = list(dict.fromkeys(p.lower() for p in providers))
    backlog = dict.fromkeys(names, 0)
    owner = await _task_ids(redis, names)
    if not owner:
        return backlog
    left = await _chapters_left(engine, sorted(owner))
    fresh = sorted(task for task in owner if task not in left)
    if fresh:
        left.update(await _not_started(engine, fresh))
    for task_id, provider in owner.items():
        backlog[provider] += left.get(task_id, 0)
    return backlog
