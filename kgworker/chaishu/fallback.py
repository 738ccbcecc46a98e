"""Provider fallback: while a provider is suspended, its waiting tasks move to a backup.

``KG_PROVIDER_FALLBACK`` names the backups of a provider in order
(``deepseek:qwen-local,rules``); the operator turns fallback on per provider
(``kgworker provider fallback NAME on`` → hash ``kgw:provider_fallback``), because moving a
book to another model changes what its graph is made of. The configuration alone never
moves anything.

What moves: items *waiting* in ``kg:ai_queue:NAME`` while ``ai:provider:suspend:NAME``
exists (breaker or operator pause), to the first backup that is not suspended itself. A
task already running was paused by the pipeline (docs/chaishu-compat.md §1) and stays with its
provider: chaishu cannot tell that pause from an operator's. A move is claim → push to
the backup's queue → record → ack: the claim has a lease, so a mover that dies midway
leaves the item to the reaper (back on the primary's queue, perhaps also on the backup's:
a duplicate item only joins the running task, never doubles a chapter). The chaishu task
row is not touched: it stays ``created`` until a backup node starts it. Once the provider
is resumed nothing moves, so new items stay on the primary. Run by the fleet duties (one
node at a time, :mod:`kgworker.chaishu.duties`).

Which provider and model produced each chapter lands on ``kgworker_chapter_runs``; the
moves on ``kgworker_task_moves``. The response cache key holds provider and model, so a
backup never reuses the primary's answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.config.specs import parse_fallback
from kgworker.queue import switches
from kgworker.queue.connection import RedisClient
from kgworker.queue.producer import push_task
from kgworker.queue.provider_queue import MalformedItem, ProviderQueue, parse_item
from kgworker.store import task_queues
from kgworker.store.task_moves import record_move

log = logging.getLogger(__name__)

#: Items moved per provider per pass.
MOVE_BATCH = 100


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
    enabled = await switches.fallback_enabled(redis)
    moves: list[Move] = []
    for provider, backups in chains.items():
        if provider not in enabled or not await switches.suspended(redis, provider):
            continue
        backup = await switches.first_unsuspended(redis, backups)
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
        extra = {k: v for k, v in payload.items()
                 if k not in ("task_id", "provider", "moved_from")}
        await push_task(redis, task_id, backup, **extra,
                        moved_from=payload.get("provider", provider))
        move = Move(task_id, provider, backup, f"{provider} suspended")
        if engine is not None:
            await record_move(engine, move.task_id, move.from_provider, move.to_provider,
                              move.reason, settings.kg_worker_node_name)
            await task_queues.record(engine, [(task_id, backup)])  # moved on purpose
        await queue.ack(claim)
        log.warning("task moved to backup %s while %s is suspended", backup, provider,
                    extra={"provider": provider, "task_id": task_id})
        moves.append(move)
    return moves
