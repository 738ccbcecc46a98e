"""Provider fallback: while a provider is suspended, its waiting tasks move to a backup.

``KG_PROVIDER_FALLBACK`` names the backups of a provider in order
(``deepseek:qwen-local,rules``); the operator turns fallback on per provider
(``kgworker provider fallback NAME on`` → hash ``kgw:provider_fallback``), because moving a
book to another model changes what its graph is made of. The configuration alone never
moves anything.

What moves: items *waiting* in ``kg:ai_queue:NAME`` while ``ai:provider:suspend:NAME``
exists (breaker or operator pause), to the first backup that is not suspended itself. A
task already running was paused by the pipeline (contract section 1) and stays with its
provider: chaishu cannot tell that pause from an operator's. A move is claim → push to
the backup's queue → record → ack: the claim has a lease, so a mover that dies midway
leaves the item to the reaper (back on the primary's queue, perhaps also on the backup's:
a duplicate item only joins the running task, never doubles a chapter). The chaishu task
row is not touched: it stays ``created`` until a backup node starts it. Once the provider
is resumed nothing moves, so new items stay on the primary. Run by the fleet duties (one
node at a time, :mod:`kgworker.store.duties`).

Which provider and model produced each chapter lands on ``kgworker_chapter_runs``; the
moves on ``kgworker_task_moves``. The response cache key holds provider and model, so a
backup never reuses the primary's answers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.config.specs import parse_fallback
from kgworker.keys import FALLBACK_KEY, queue_key, suspend_key
from kgworker.queue.connection import RedisClient
from kgworker.queue.provider_queue import MalformedItem, ProviderQueue, parse_item

log = logging.getLogger(__name__)

#: Items moved per provider per pass.
MOVE_BATCH = 100


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def set_enabled(redis: RedisClient, provider: str, on: bool) -> None:
    if on:
        await redis.hset(FALLBACK_KEY, provider.lower(), "on")
    else:
        await redis.hdel(FALLBACK_KEY, provider.lower())


async def enabled_providers(redis: RedisClient) -> set[str]:
    return {_text(k).lower() for k, v in (await redis.hgetall(FALLBACK_KEY)).items()
            if _text(v) == "on"}


async def first_healthy(redis: RedisClient, backups: tuple[str, ...]) -> str | None:
    """The first backup that is not suspended or paused itself."""
    if not backups:
        return None
    pipe = redis.pipeline(transaction=False)
    for backup in backups:
        pipe.exists(suspend_key(backup))
    for backup, suspended in zip(backups, await pipe.execute(), strict=True):
        if not suspended:
            return backup
    return None


@dataclass(frozen=True)
class Move:
    task_id: int
    from_provider: str
    to_provider: str
    reason: str


async def move_waiting(
    settings: Settings, redis: RedisClient, engine: AsyncEngine | None
) -> list[Move]:
    """One pass: move the waiting items of every suspended provider with fallback on."""
    try:
        chains = parse_fallback(settings.kg_provider_fallback)
    except ValueError as exc:
        log.error("fallback disabled: %s", exc)
        return []
    if not chains:
        return []
    enabled = await enabled_providers(redis)
    moves: list[Move] = []
    for provider, backups in chains.items():
        if provider not in enabled or not await redis.exists(suspend_key(provider)):
            continue
        backup = await first_healthy(redis, backups)
        if backup is None:
            continue
        moves += await _move(settings, redis, engine, provider, backup)
    return moves


async def _move(
    settings: Settings, redis: RedisClient, engine: AsyncEngine | None, provider: str, backup: str
) -> list[Move]:
    queue = ProviderQueue(redis, provider, node=settings.kg_worker_node_name,
                          lease_seconds=settings.kg_lease_seconds,
                          max_stalls=settings.kg_max_stalls)
    moves: list[Move] = []
    for claim in await queue.claim(MOVE_BATCH):
        try:
            task_id, payload = parse_item(claim.raw, provider)
        except MalformedItem:  # the primary's consumer dead-letters it once resumed
            await queue.release(claim, count_attempt=False, reason="fallback: malformed")
            continue
        item = {**payload, "provider": backup, "moved_from": payload.get("provider", provider)}
        await redis.rpush(queue_key(backup), json.dumps(item, ensure_ascii=False))
        move = Move(task_id, provider, backup, f"{provider} suspended")
        if engine is not None:
            await record_move(engine, move, settings.kg_worker_node_name)
        await queue.ack(claim)
        log.warning("task moved to backup %s while %s is suspended", backup, provider,
                    extra={"provider": provider, "task_id": task_id})
        moves.append(move)
    return moves


async def record_move(engine: AsyncEngine, move: Move, node: str) -> None:
    from kgworker.store.schema.ours import TaskMove

    async with engine.begin() as conn:
        await conn.execute(insert(TaskMove).values(
            task_id=move.task_id, from_provider=move.from_provider,
            to_provider=move.to_provider, reason=move.reason[:255], node=node,
        ))


async def read_fallback(redis: RedisClient, settings: Settings) -> list[dict[str, Any]]:
    """Status view: each configured chain, whether it is on, and where items would go now."""
    try:
        chains = parse_fallback(settings.kg_provider_fallback)
    except ValueError:
        return []
    enabled = await enabled_providers(redis)
    out: list[dict[str, Any]] = []
    for provider, backups in chains.items():
        out.append({
            "provider": provider,
            "backups": list(backups),
            "enabled": provider in enabled,
            "suspended": bool(await redis.exists(suspend_key(provider))),
            "target_now": await first_healthy(redis, backups),
        })
    return out


async def read_moves(engine: AsyncEngine, *, limit: int = 20) -> list[dict[str, Any]]:
    """Recent moves, each with its task's finished chapters counted by provider and model."""
    from kgworker.store.schema.ours import ChapterRun, TaskMove

    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(TaskMove).order_by(TaskMove.id.desc()).limit(limit)
        )).all()
        task_ids = sorted({row.task_id for row in rows})
        produced: dict[int, dict[str, int]] = {}
        if task_ids:
            counts = await conn.execute(
                select(ChapterRun.task_id, ChapterRun.provider, ChapterRun.model, func.count())
                .where(ChapterRun.task_id.in_(task_ids), ChapterRun.status == "completed")
                .group_by(ChapterRun.task_id, ChapterRun.provider, ChapterRun.model)
            )
            for task_id, provider, model, count in counts:
                label = f"{provider or '?'}/{model}" if model else str(provider or "?")
                produced.setdefault(int(task_id), {})[label] = int(count)
    return [
        {
            "task_id": row.task_id,
            "from": row.from_provider,
            "to": row.to_provider,
            "reason": row.reason,
            "node": row.node,
            "moved_at": row.moved_at.isoformat() if row.moved_at else None,
            "chapters_by_producer": produced.get(row.task_id, {}),
        }
        for row in rows
    ]
