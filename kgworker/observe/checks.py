"""Queue and lease checks for ``kgworker doctor``: is work stuck anywhere in the fleet?

Reachability says the stores answer; these say whether the state inside them is healthy:
claims whose lease ran out long ago and nobody reaped (no node serves that provider),
claims without a lease (should never happen), chapters ``running`` under an expired
chapter lease, queued work that no slot serves, paused providers, dead letters, stale
nodes, task counters that disagree with their chapter rows. ``FAIL`` means work is
stuck; ``WARN`` means an operator should look.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.keys import ProviderKeys
from kgworker.observe.fleet import discover_providers, read_nodes, read_providers
from kgworker.queue.connection import RedisClient

OK, WARN, FAIL = "OK", "WARN", "FAIL"

_EXPIRED_CHAPTERS = (
    "SELECT COUNT(DISTINCT cs.kg_task_id, cs.chapter_id) FROM knowledge_graph_chapter_status cs"
    " LEFT JOIN kgworker_chapter_claims cl"
    " ON cl.task_id = cs.kg_task_id AND cl.chapter_id = cs.chapter_id"
    " WHERE cs.status = 'running' AND (cl.token IS NULL OR cl.lease_until < NOW(6) - INTERVAL"
    " :grace SECOND)"
)


#: Tasks whose counters disagree with their chapter rows (what a recount would write).
_SKEWED_COUNTERS = (
    "SELECT t.id FROM knowledge_graph_tasks t JOIN (SELECT kg_task_id,"
    " COUNT(DISTINCT chapter_id) AS total,"
    " COUNT(DISTINCT IF(status = 'completed', chapter_id, NULL)) AS completed,"
    " COUNT(DISTINCT IF(status = 'failed', chapter_id, NULL)) AS failed,"
    " COUNT(DISTINCT IF(status = 'pending', chapter_id, NULL)) AS pending,"
    " COALESCE(SUM(IF(status = 'completed', entities_extracted, 0)), 0) AS entities,"
    " COALESCE(SUM(IF(status = 'completed', relations_extracted, 0)), 0) AS relations"
    " FROM knowledge_graph_chapter_status GROUP BY kg_task_id) s ON s.kg_task_id = t.id"
    " WHERE t.status IN ('running', 'completed', 'failed') AND (t.total_chapters <> s.total"
    " OR t.completed_chapters <> s.completed"
    " OR t.failed_chapters <> s.failed + IF(t.status = 'failed', s.pending, 0)"
    " OR t.total_entities <> s.entities OR t.total_relations <> s.relations)"
    " ORDER BY t.id"
)


@dataclass(frozen=True)
class Finding:
    level: str
    subject: str
    message: str


def overdue_ms(settings: Settings) -> int:
    """How long past its expiry a claim may stay before a reaper should have taken it."""
    return int((3 * settings.kg_reaper_interval + 5) * 1000)


async def queue_checks(settings: Settings, redis: RedisClient) -> list[Finding]:
    found: list[Finding] = []
    providers = await discover_providers(redis, settings.kg_worker_providers)
    states = {s.provider: s for s in await read_providers(redis, settings, providers)}
    server_time = await redis.time()
    now_ms = int(server_time[0]) * 1000 + int(server_time[1]) // 1000
    for name in providers:
        state = states[name]
        keys = ProviderKeys.for_provider(name)
        stuck = int(await redis.zcount(keys.leases, "-inf", now_ms - overdue_ms(settings)))
        claim_ids = {_s(k) for k in await redis.hkeys(keys.claims)}
        leased = {_s(k) for k in await redis.zrange(keys.leases, 0, -1)}
        problems: list[Finding] = []
        if stuck:
            problems.append(Finding(FAIL, name, f"{stuck} claim(s) expired and not reaped: "
                                    "no live node serves this provider"))
        if claim_ids - leased:
            problems.append(Finding(FAIL, name, f"{len(claim_ids - leased)} claim(s) without "
                                    "a lease: they will never be reaped"))
        if state.queued and not state.live_slots:
            problems.append(Finding(WARN, name, f"{state.queued} queued, no slot serves it"))
        if state.suspended_until is not None:
            left = max(0, int(state.suspended_until - time.time()))
            problems.append(Finding(WARN, name, f"paused ({left} s left); "
                                    f"`kgworker provider resume {name}` lifts it"))
        if state.dead:
            problems.append(Finding(WARN, name, f"{state.dead} item(s) in the dead-letter "
                                    f"queue (`kgworker dlq list {name}`)"))
        found += problems or [
            Finding(OK, name, f"queued {state.queued}, claims {state.claimed} all leased, "
                    f"slots {state.busy_slots}/{state.live_slots} busy")
        ]
    stale_after = 3 * settings.kg_heartbeat_interval + 30
    for node in await read_nodes(redis):
        beat = _epoch(node.last_heartbeat)
        if beat is not None and time.time() - beat > stale_after:
            found.append(Finding(WARN, f"node {node.name}", f"last heartbeat "
                                 f"{int(time.time() - beat)} s ago"))
    if not providers:
        found.append(Finding(OK, "queues", "no provider queue exists yet"))
    return found


async def lease_checks(settings: Settings, engine: AsyncEngine) -> list[Finding]:
    """Chapters running under a chapter lease that expired beyond the reaper's reach."""
    grace = int(overdue_ms(settings) / 1000)
    try:
        async with engine.connect() as conn:
            count = int(await conn.scalar(text(_EXPIRED_CHAPTERS), {"grace": grace}) or 0)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "doesn't exist" in first or "1146" in first:
            return [Finding(WARN, "chapters", "schema not migrated (`kgworker db upgrade`)")]
        return [Finding(FAIL, "chapters", first)]
    if count:
        return [Finding(FAIL, "chapters", f"{count} chapter(s) running under a lease that "
                        f"expired over {grace} s ago: no node is reaping them")]
    return [Finding(OK, "chapters", "every running chapter holds a live lease")]


async def counter_checks(engine: AsyncEngine) -> list[Finding]:
    """Tasks whose counters disagree with a recount of their chapter rows.

    Counters grow with each finished chapter and are recounted when the task finishes
    (:mod:`kgworker.store.tasks`); the audit duty recounts finished tasks touched lately.
    A disagreement left is someone else's write (docs/chaishu-compat.md §7) not yet
    recounted: worth a look, not stuck work.
    """
    try:
        async with engine.connect() as conn:
            ids = [int(r[0]) for r in await conn.execute(text(_SKEWED_COUNTERS))]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "doesn't exist" in first or "1146" in first:
            return []  # not migrated: the chapters check says so
        return [Finding(WARN, "counters", first)]
    if ids:
        shown = ", ".join(str(i) for i in ids[:10]) + (" …" if len(ids) > 10 else "")
        return [Finding(WARN, "counters", f"{len(ids)} task(s) whose counters disagree with "
                        f"their chapter rows: {shown}")]
    return [Finding(OK, "counters", "every task's counters equal its chapter rows' sums")]


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _epoch(value: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None


async def state_checks(settings: Settings, *, redis_ok: bool, mysql_ok: bool) -> list[Finding]:
    """Queue checks if Redis answered, lease checks if MySQL did; own short-lived clients."""
    from kgworker.queue.connection import create_redis
    from kgworker.store.mysql import create_engine

    found: list[Finding] = []
    if redis_ok:
        redis = create_redis(settings, socket_timeout=10)
        try:
            found += await queue_checks(settings, redis)
        finally:
            await redis.aclose()
    if mysql_ok:
        engine = create_engine(settings, pool_size=1, max_overflow=0)
        try:
            found += await lease_checks(settings, engine)
            found += await counter_checks(engine)
        finally:
            await engine.dispose()
    return found
