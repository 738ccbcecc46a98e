"""Chapter claims, several at a time: the first pending chapters of a task in one transaction.

A claim flips the chaishu rows ``pending`` → ``running`` and records owner, token and lease
in ``kgworker_chapter_claims`` (:mod:`kgworker.store.chapters` says how claims end). Per
batch, whatever its size: one status read, one read of the claim order
(:mod:`kgworker.store.pending`: an index walk, no sort), one locking read of the candidate
rows, one UPDATE of the chaishu rows, one DELETE of their order entries, one multi-row
upsert of the claims, one UPDATE of the task's current chapter and one commit. So a node
with many free slots does not claim at one chapter's round trips at a time.

Who wins a row: the locking read (``FOR UPDATE``) takes only rows still ``pending``; with
``SKIP LOCKED`` (MariaDB 10.6+, MySQL 8) a row another claimer holds at that moment is
passed over, so two nodes claiming one book at once split its chapters instead of queueing
behind each other's locks. Without it (older servers) the read waits for that claimer, then
sees the row ``running`` and leaves it. Lock order as everywhere: chapter rows under no task
lock here (the task row is only updated, last).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import ChapterStatus, TaskStatus
from kgworker.store import pending
from kgworker.store.chapters import CL, CS, ChapterClaimed
from kgworker.store.dialect import clock_column, is_server, upsert_rows
from kgworker.store.schema.chaishu import KnowledgeGraphTask
from kgworker.store.txn import in_transaction, read_committed

#: Rounds of a batch lost to other claimers before it returns what it has.
MAX_ROUNDS = 4
#: Candidates read at most in one round (the window grows past rows others worked).
MAX_WINDOW = 1024


def attempt_number(
    token: str | None, attempts: int | None, stamp: datetime | None, row_updated_at: datetime | None
) -> int:
    """The attempt a new claim is: the next one, unless the chapter row changed hands.

    A claim that never ended by our hand (``token`` still set) was ended by someone else
    (the row was reset under it); a row whose ``updated_at`` is not the one we last wrote
    was reset, retried or worked by someone else since; a row we finished (no ``stamp``)
    is pending again only because someone reset it — ``updated_at`` has whole seconds, so
    a reset in the second of our finish would look unchanged. Each way the count starts
    anew.
    """
    if token is not None or stamp is None or row_updated_at != stamp:
        return 1
    return (attempts or 0) + 1


def skips_locked(conn: AsyncConnection) -> bool:
    """Whether the server knows ``SKIP LOCKED`` (MariaDB 10.6+, MySQL 8.0.1+)."""
    if not is_server(conn):
        return False
    dialect = conn.dialect
    version = tuple(getattr(dialect, "server_version_info", None) or ())
    if getattr(dialect, "is_mariadb", False):
        return version >= (10, 6)
    return version >= (8, 0, 1)


async def claim_chapter(
    engine: AsyncEngine, task_id: int, owner: str, lease_seconds: float, *, window: int = 8
) -> ChapterClaimed | None:
    """Claim the first pending chapter (chapter_number order) of a running task, or None."""
    claimed = await claim_chapters(engine, task_id, owner, lease_seconds, 1, window=window)
    return claimed[0] if claimed else None


async def claim_chapters(
    engine: AsyncEngine, task_id: int, owner: str, lease_seconds: float, limit: int,
    *, window: int = 8,
) -> list[ChapterClaimed]:
    """Claim up to ``limit`` pending chapters of a running task, first ones first, in one
    transaction; fewer (or none) when fewer are pending or other claimers hold them."""
    lease_us = int(lease_seconds * 1_000_000)
    limit = max(1, limit)

    async def work(conn: AsyncConnection) -> list[ChapterClaimed]:
        task = (await conn.execute(
            select(KnowledgeGraphTask.status, clock_column(conn))
            .where(KnowledgeGraphTask.id == task_id))).first()
        if task is None or task[0] != TaskStatus.RUNNING:
            return []
        clock: datetime = task[1]  # the lease clock when the claim began
        claimed: list[ChapterClaimed] = []
        tried: set[int] = set()  # chapter ids this batch tried to lock (ours or others' now)
        seeded, rounds, size = False, 0, max(window, 2 * limit)
        while rounds < MAX_ROUNDS and len(claimed) < limit:
            candidates = (await conn.execute(pending.candidates(task_id, size))).all()
            if not candidates:
                if seeded or not await pending.seed(conn, task_id):
                    break
                seeded = True
                continue
            await pending.drop_stale(
                conn, task_id, [row for row in candidates if not pending.is_pending(row)])
            fresh = [row for row in candidates  # pending when last committed, not tried yet
                     if pending.is_pending(row) and row.chapter_id not in tried]
            trying = fresh[: limit - len(claimed)]
            tried.update(row.chapter_id for row in trying)
            won = await _lock_pending(conn, task_id, trying) if trying else []
            if trying:
                rounds += 1
            if won:
                claimed += await _claim_rows(conn, task_id, won, owner, clock, lease_us)
            if len(won) < len(trying) or not trying:  # held or worked by others: look further
                if size == MAX_WINDOW and not trying:
                    break
                size = min(size * 4, MAX_WINDOW)
        if claimed:
            await conn.execute(
                update(KnowledgeGraphTask).where(KnowledgeGraphTask.id == task_id)
                .values(current_chapter_id=claimed[-1].chapter_id))
        return claimed

    return await in_transaction(read_committed(engine), work)


async def _lock_pending(conn: AsyncConnection, task_id: int, rows: Sequence[Any]) -> list[Any]:
    """The candidate ``rows`` whose chapter row we now hold locked and ``pending``."""
    query = select(CS.chapter_id).where(
        CS.kg_task_id == task_id, CS.chapter_id.in_([int(r.chapter_id) for r in rows]),
        CS.status == ChapterStatus.PENDING,
    ).with_for_update(skip_locked=skips_locked(conn))
    held = {int(chapter_id) for (chapter_id,) in await conn.execute(query)}
    return [row for row in rows if int(row.chapter_id) in held]


async def _claim_rows(
    conn: AsyncConnection, task_id: int, rows: Sequence[Any], owner: str, clock: datetime,
    lease_us: int,
) -> list[ChapterClaimed]:
    """Flip the locked pending ``rows`` to ``running`` and record our claims on them; the
    lease runs from ``clock`` (the lease clock read as the transaction began, a few
    milliseconds early at most: a lease ends that much sooner, never later)."""
    ids = [int(r.chapter_id) for r in rows]
    now = chaishu_now()
    await conn.execute(
        update(CS)
        .where(CS.kg_task_id == task_id, CS.chapter_id.in_(ids),
               CS.status == ChapterStatus.PENDING)
        .values(status=ChapterStatus.RUNNING, started_at=now, updated_at=now))
    await pending.drop(conn, task_id, rows)
    claims = [
        ChapterClaimed(task_id, int(r.chapter_id), int(r.chapter_number), secrets.token_hex(16),
                       owner, attempt_number(r.token, r.attempts, r.row_updated_at,
                                             r.updated_at))
        for r in rows
    ]
    values = [{"task_id": task_id, "chapter_id": c.chapter_id, "token": c.token,
               "owner": owner, "lease_until": clock + timedelta(microseconds=lease_us),
               "attempts": c.attempts, "claimed_at": clock, "row_updated_at": now}
              for c in claims]
    await upsert_rows(conn, CL, values, keys=("task_id", "chapter_id"), update=_claim_update)
    return claims


def _claim_update(new: Any) -> dict[str, Any]:
    return {"token": new.token, "owner": new.owner, "lease_until": new.lease_until,
            "attempts": new.attempts, "claimed_at": new.claimed_at,
            "row_updated_at": new.row_updated_at}
