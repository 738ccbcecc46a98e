"""The data behind ``kgworker status`` and ``/status``: one JSON-friendly snapshot.

Redis gives nodes, slots and providers (:mod:`kgworker.observe.fleet`); MySQL gives the
tasks being worked, with a rate measured from chapter completions of the last minutes, so
an ETA means "at the pace of now", not since the task began. Each half fails on its own:
with MySQL down the snapshot still shows the fleet, with a reason where the tasks were.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.config.specs import parse_fallback
from kgworker.domain.status import ChapterStatus, TaskStatus
from kgworker.llm.adaptive import read_states as read_adaptive
from kgworker.observe.fleet import discover_providers, read_nodes, read_providers
from kgworker.queue import switches
from kgworker.queue.connection import RedisClient
from kgworker.store.task_moves import read_moves

#: Window over which the chapter rate (and so the ETA) of a task is measured.
RATE_WINDOW = timedelta(minutes=10)
ACTIVE_STATUSES = (TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.CREATED)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def read_tasks(engine: AsyncEngine, *, limit: int = 50) -> list[dict[str, Any]]:
    """Tasks created, running or paused: progress, chapter rate per minute and ETA."""
    from kgworker.domain.clock import chaishu_now
    from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus as CS
    from kgworker.store.schema.chaishu import KnowledgeGraphTask as T
    from kgworker.store.schema.chaishu import Novel

    since = chaishu_now() - RATE_WINDOW
    recent = (
        select(CS.kg_task_id, func.count().label("n"))
        .where(and_(CS.status == ChapterStatus.COMPLETED, CS.completed_at >= since))
        .group_by(CS.kg_task_id)
        .subquery()
    )
    query = (
        select(
            T.id,
            T.task_name,
            T.novel_id,
            Novel.title,
            T.status,
            T.total_chapters,
            T.completed_chapters,
            T.failed_chapters,
            T.started_at,
            T.error_message,
            func.coalesce(recent.c.n, 0),
        )
        .outerjoin(Novel, Novel.id == T.novel_id)
        .outerjoin(recent, recent.c.kg_task_id == T.id)
        .where(T.status.in_(ACTIVE_STATUSES))
        .order_by(T.id)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    tasks: list[dict[str, Any]] = []
    for row in rows:
        (task_id, name, novel_id, title, status, total, done, failed, started, error, n) = row
        total, done, failed = int(total or 0), int(done or 0), int(failed or 0)
        rate = int(n) / (RATE_WINDOW.total_seconds() / 60)
        left = max(0, total - done - failed)
        eta = left / rate * 60 if rate > 0 and status == TaskStatus.RUNNING else None
        tasks.append(
            {
                "task_id": task_id,
                "task_name": name,
                "novel_id": novel_id,
                "book": title or f"novel {novel_id}",
                "status": status,
                "total": total,
                "done": done,
                "failed": failed,
                "rate_per_min": round(rate, 2),
                "eta_seconds": None if eta is None else round(eta),
                "started_at": started.isoformat() if started else None,
                "error": error,
            }
        )
    return tasks


async def read_recent_errors(engine: AsyncEngine, *, limit: int = 10) -> list[dict[str, Any]]:
    """The latest failed chapters with their message, newest first (the fleet page); times
    carry chaishu's offset, so a browser anywhere reads them right."""
    from kgworker.domain.clock import CHAISHU_TZ
    from kgworker.store.schema.chaishu import Chapter, Novel
    from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus as CS
    from kgworker.store.schema.chaishu import KnowledgeGraphTask as T

    query = (
        select(CS.kg_task_id, CS.chapter_id, Chapter.chapter_number, Chapter.title,
               Novel.title, CS.error_message, CS.updated_at)
        .join(Chapter, Chapter.id == CS.chapter_id, isouter=True)
        .join(T, T.id == CS.kg_task_id, isouter=True)
        .join(Novel, Novel.id == T.novel_id, isouter=True)
        .where(and_(CS.status == ChapterStatus.FAILED, CS.error_message.is_not(None)))
        .order_by(CS.updated_at.desc(), CS.id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {"task_id": task, "chapter_id": chapter, "chapter_number": number,
         "chapter": title, "book": book, "error": error,
         "at": at.replace(tzinfo=CHAISHU_TZ).isoformat() if at else None}
        for task, chapter, number, title, book, error, at in rows
    ]


async def read_fallback(redis: RedisClient, settings: Settings) -> list[dict[str, Any]]:
    """Each configured fallback chain, whether it is on, and where items would go now."""
    try:
        chains = parse_fallback(settings.kg_provider_fallback)
    except ValueError:
        return []
    enabled = await switches.fallback_enabled(redis)
    return [
        {
            "provider": provider,
            "backups": list(backups),
            "enabled": provider in enabled,
            "suspended": await switches.suspended(redis, provider),
            "target_now": await switches.first_unsuspended(redis, backups),
        }
        for provider, backups in chains.items()
    ]


async def gather(
    settings: Settings,
    redis: RedisClient,
    engine: AsyncEngine | None,
    *,
    node_name: str | None = None,
    providers: list[str] | None = None,
) -> dict[str, Any]:
    """The whole fleet, or one node (``node_name``) and the providers it serves."""
    snapshot: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "nodes": [],
        "providers": [],
        "tasks": [],
        "adaptive": [],
        "fallback": [],
        "moves": [],
        "errors": {},
    }
    try:
        nodes = await read_nodes(redis)
        if node_name is not None:
            nodes = [n for n in nodes if n.name == node_name]
        extra = list(settings.kg_worker_providers) + list(providers or [])
        for node in nodes:
            extra += list(node.fields.get("providers") or []) + list(node.providers)
        names = await discover_providers(redis, extra)
        if node_name is not None:
            served = set(providers or [])
            for node in nodes:
                served.update(node.fields.get("providers") or [], node.providers)
            names = [n for n in names if n in served] if served else names
        states = await read_providers(redis, settings, names)
    except Exception as exc:  # one readable reason; the MySQL half may still work
        snapshot["errors"]["redis"] = _reason(exc)
    else:
        now = time.time()
        snapshot["nodes"] = [
            {
                "name": n.name,
                "alive": n.ttl > 0 or n.ttl == -1,
                "ttl": n.ttl,
                "last_heartbeat": n.last_heartbeat,
                "version": n.fields.get("version", ""),
                "pid": n.fields.get("pid"),
                "slots": n.slots,
                "busy": n.busy,
                "limit": n.fields.get("max_total"),
                "providers": n.providers,
            }
            for n in nodes
        ]
        snapshot["providers"] = [
            {
                **s.as_dict(),
                "paused": s.suspended_until is not None,
                "paused_for_seconds": (
                    None if s.suspended_until is None else max(0, round(s.suspended_until - now))
                ),
            }
            for s in states
        ]
        try:  # flow control (issue 10): adaptive targets and fallback chains
            snapshot["adaptive"] = await read_adaptive(redis, settings, names)
            snapshot["fallback"] = await read_fallback(redis, settings)
        except Exception as exc:
            snapshot["errors"]["redis"] = _reason(exc)
    if engine is not None:
        try:
            snapshot["tasks"] = await read_tasks(engine)
            snapshot["moves"] = await read_moves(engine)
        except Exception as exc:
            snapshot["errors"]["mysql"] = _reason(exc)
    return snapshot
