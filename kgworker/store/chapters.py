"""Chapter claims: one chapter is the unit of work that any slot of any node may take.

Claims are taken in :mod:`kgworker.store.claims`; this module ends them. A claim flips the
chaishu row ``pending`` → ``running`` with a conditional UPDATE (the row lock makes exactly
one claimer win) and records owner, token and lease in
``kgworker_chapter_claims`` in the same transaction. Leases are on the database clock.
Finishing checks the token (fencing): a node whose lease was reaped cannot overwrite the
chapter another node now holds. Lock order everywhere a task row is involved: task row,
then claim row, then chapter row.

The same statements run on the demo's SQLite: :mod:`kgworker.store.dialect` supplies the
clock and the upserts; the conditional UPDATE of the chapter row still decides the claim,
and the engine of :mod:`kgworker.store.sqlite` makes transactions take turns in place of row
locks.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.domain.progress import Progress
from kgworker.domain.status import ChapterStatus
from kgworker.store import pending
from kgworker.store.dialect import clock_after, for_update, now_sql, upsert
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus
from kgworker.store.schema.ours import ChapterClaim, ChapterRun
from kgworker.store.tasks import count_finished, lock_task
from kgworker.store.txn import in_transaction, read_committed

log = logging.getLogger(__name__)

CS = KnowledgeGraphChapterStatus
CL = ChapterClaim

_STILL_HELD = text(
    "SELECT cl.token FROM kgworker_chapter_claims cl"
    " JOIN knowledge_graph_chapter_status cs"
    " ON cs.kg_task_id = cl.task_id AND cs.chapter_id = cl.chapter_id AND cs.status = 'running'"
    " WHERE cl.owner = :owner AND cl.token IN :tokens"
).bindparams(bindparam("tokens", expanding=True))
#: Running rows under an expired claim of ours, and (with ``{foreign}``) running rows with
#: no claim of ours at all that have been idle since ``:idle_since``.
_EXPIRED = (
    "SELECT DISTINCT cs.kg_task_id, cs.chapter_id, cl.token IS NULL AS foreign_row"
    " FROM knowledge_graph_chapter_status cs"
    " LEFT JOIN kgworker_chapter_claims cl"
    " ON cl.task_id = cs.kg_task_id AND cl.chapter_id = cs.chapter_id"
    " WHERE cs.status = 'running' AND ((cl.token IS NOT NULL AND (cl.lease_until < {now}"
    "{dead})){foreign})"
)
_DEAD = " OR cl.owner IN :dead"
_OWNERS = "SELECT DISTINCT owner FROM kgworker_chapter_claims WHERE token IS NOT NULL"
_FOREIGN = " OR (cl.token IS NULL AND (cs.updated_at IS NULL OR cs.updated_at < :idle_since))"
_CLAIM_ROW = (
    "SELECT token, owner, attempts, lease_until < {now} AS expired, lease_until,"
    " {now} AS db_now FROM kgworker_chapter_claims WHERE task_id = :t AND chapter_id = :c{lock}"
)
#: A live owner's claim expired this many leases ago is taken from it (a stuck node), and
#: without counting an attempt: the chapter did nothing wrong.
STUCK_LEASES = 10
_LIVE = (
    "SELECT COUNT(*) FROM kgworker_chapter_claims"
    " WHERE task_id = :t AND token IS NOT NULL AND lease_until >= {now}"
)


@dataclass(frozen=True, slots=True)
class ChapterClaimed:
    """A chapter held by one slot until finished, released or reaped."""

    task_id: int
    chapter_id: int
    chapter_number: int
    token: str
    owner: str
    attempts: int

    @property
    def key(self) -> str:
        return f"{self.task_id}:{self.chapter_id}"


@dataclass(frozen=True, slots=True)
class Finished:
    """What finishing a chapter did: ``lost`` = the claim was no longer ours."""

    lost: bool
    progress: Progress | None = None
    finalised: str | None = None


async def renew_claims(
    engine: AsyncEngine, owner: str, tokens: Sequence[str], lease_seconds: float
) -> set[str]:
    """Extend leases; return the tokens no longer held (reaped, reset by chaishu, finished)."""
    if not tokens:
        return set()

    async def work(conn: AsyncConnection) -> set[str]:
        params = {"owner": owner, "tokens": list(tokens)}
        await conn.execute(
            update(CL).where(CL.owner == owner, CL.token.in_(list(tokens)))
            .values(lease_until=clock_after(conn, int(lease_seconds * 1e6)))
        )
        held = {row[0] for row in await conn.execute(_STILL_HELD, params)}
        return set(tokens) - held

    return await in_transaction(read_committed(engine), work)


async def _lock_claim(conn: AsyncConnection, claim: ChapterClaimed) -> bool:
    token = await conn.scalar(
        select(CL.token)
        .where(CL.task_id == claim.task_id, CL.chapter_id == claim.chapter_id)
        .with_for_update()
    )
    return token == claim.token


async def release_chapter(
    engine: AsyncEngine, claim: ChapterClaimed, *, error: str | None = None,
    count_attempt: bool = False,
) -> bool:
    """Put a held chapter back to ``pending`` now (shutdown, pause, cancel, retryable error)."""

    async def work(conn: AsyncConnection) -> bool:
        if not await _lock_claim(conn, claim):
            return False
        attempts = CL.attempts if count_attempt else CL.attempts - 1
        now = chaishu_now()
        await conn.execute(
            update(CL)
            .where(CL.task_id == claim.task_id, CL.chapter_id == claim.chapter_id)
            .values(token=None, owner=None, lease_until=None, attempts=attempts,
                    last_error=error, row_updated_at=now)
        )
        moved = await conn.execute(
            update(CS)
            .where(CS.kg_task_id == claim.task_id, CS.chapter_id == claim.chapter_id,
                   CS.status == ChapterStatus.RUNNING)
            .values(status=ChapterStatus.PENDING, started_at=None, updated_at=now)
        )
        if moved.rowcount:
            await pending.add(conn, claim.task_id, claim.chapter_id, claim.chapter_number)
        return True

    return await in_transaction(read_committed(engine), work)


async def finish_chapter(
    engine: AsyncEngine,
    claim: ChapterClaimed,
    *,
    entities: int = 0,
    relations: int = 0,
    error: str | None = None,
    run: dict[str, Any] | None = None,
) -> Finished:
    """Commit a chapter as completed (``error`` None) or failed, count it, maybe finalise.

    One transaction: the chaishu row, our claim and run rows, the task counters and the
    task's final status move together, so a crash leaves either all or none of it.
    """
    status = ChapterStatus.COMPLETED if error is None else ChapterStatus.FAILED

    async def work(conn: AsyncConnection) -> Finished:
        task = await lock_task(conn, claim.task_id)
        if task is None or not await _lock_claim(conn, claim):
            return Finished(lost=True)
        now = chaishu_now()
        done = await conn.execute(
            update(CS)
            .where(CS.kg_task_id == claim.task_id, CS.chapter_id == claim.chapter_id,
                   CS.status == ChapterStatus.RUNNING)
            .values(status=status, entities_extracted=entities if error is None else 0,
                    relations_extracted=relations if error is None else 0,
                    error_message=error, completed_at=now, updated_at=now)
        )
        await conn.execute(  # a finished row is pending again only by someone else's
            update(CL)       # reset, even within the same second: no stamp, count anew
            .where(CL.task_id == claim.task_id, CL.chapter_id == claim.chapter_id)
            .values(token=None, owner=None, lease_until=None, last_error=error,
                    row_updated_at=None)
        )
        if not done.rowcount:
            return Finished(lost=True)
        if run is not None:
            await _store_run(conn, claim, status, entities, relations, run)
        if error is None:
            progress = await count_finished(conn, task, completed=1, entities=entities,
                                            relations=relations)
        else:
            progress = await count_finished(conn, task, failed=1, error_message=error,
                                            last_error_chapter_id=claim.chapter_id)
        finalised = progress.status if progress.status != task.status else None
        return Finished(lost=False, progress=progress, finalised=finalised)

    return await in_transaction(read_committed(engine), work)


async def _store_run(
    conn: AsyncConnection, claim: ChapterClaimed, status: str, entities: int, relations: int,
    run: dict[str, Any],
) -> None:
    values = {
        "task_id": claim.task_id, "chapter_id": claim.chapter_id, "owner": claim.owner,
        "status": status, "attempts": claim.attempts, "entities": entities,
        "relations": relations, **run,
    }
    keys = [k for k in values if k not in ("task_id", "chapter_id")]
    await conn.execute(upsert(conn, ChapterRun, values, keys=("task_id", "chapter_id"),
                              update=lambda new: {k: new[k] for k in keys}))


@dataclass(frozen=True, slots=True)
class ForeignRows:
    """How to treat ``running`` chapter rows that hold no claim of ours.

    Such a row may be an old chaishu worker's live chapter (docs/chaishu-compat.md §7): it
    belongs to someone else until that someone is gone — its task has no live old-worker
    entry (``live_tasks``) and the row has not changed since ``idle_since``.
    """

    idle_since: datetime
    live_tasks: frozenset[int]


@dataclass(frozen=True, slots=True)
class Owners:
    """Which claim owners are alive (their liveness key exists): see ``reap_expired``."""

    alive: frozenset[str]
    dead: frozenset[str]
    lease_seconds: float


async def claim_owners(engine: AsyncEngine) -> set[str]:
    """Owners of every chapter claim held now."""
    async with engine.connect() as conn:
        return {str(r[0]) for r in await conn.execute(text(_OWNERS)) if r[0] is not None}


async def reap_expired(
    engine: AsyncEngine, *, task_id: int | None = None, max_attempts: int = 3,
    foreign: ForeignRows | None = None, owners: Owners | None = None,
) -> list[tuple[int, int]]:
    """Return chapters whose claim is over to ``pending`` (or ``failed`` once they were
    claimed ``max_attempts`` times: a chapter that keeps killing workers).

    Without ``owners``: claims whose lease expired, each counted as an attempt. With it:
    a dead owner's claims at once (counted: the node died on the chapter), a live owner's
    only once they are ``STUCK_LEASES`` leases overdue (not counted: an owner that cannot
    renew through a store outage keeps its chapters and its attempts). With ``foreign``,
    also the running rows of nobody we can see (an old worker that died): back to
    ``pending`` without counting an attempt of ours.
    """
    dead = sorted(owners.dead) if owners is not None else []
    query = _EXPIRED.format(now="{now}", dead=_DEAD if dead else "",
                            foreign=_FOREIGN if foreign is not None else "")
    if task_id is not None:
        query += " AND cs.kg_task_id = :task_id"
    params: dict[str, Any] = {"task_id": task_id}
    if foreign is not None:
        params["idle_since"] = foreign.idle_since
    async with read_committed(engine).connect() as conn:
        stmt, clock = now_sql(conn, query)
        if dead:
            stmt = stmt.bindparams(bindparam("dead", expanding=True))
            params["dead"] = dead
        found = [(int(t), int(c), bool(f)) for t, c, f in await conn.execute(
            stmt, {**params, **clock})]
    reaped: list[tuple[int, int]] = []
    for tid, cid, foreign_row in found:
        if foreign_row and foreign is not None and tid in foreign.live_tasks:
            continue
        reap = _reap_foreign if foreign_row else _reap_ours
        if await in_transaction(read_committed(engine),
                                functools.partial(reap, tid=tid, cid=cid,
                                                  max_attempts=max_attempts, owners=owners)):
            log.warning("chapter %s: returned", "of a vanished worker" if foreign_row
                        else "claim over", extra={"task_id": tid, "chapter_id": cid})
            reaped.append((tid, cid))
    return reaped


def _verdict(row: Any, owners: Owners | None) -> tuple[bool, bool]:
    """(reap it, count an attempt) for a claim row of ours."""
    if row is None or row.token is None:
        return False, False
    if owners is None:
        return bool(row.expired), True
    if row.owner in owners.dead or (row.expired and row.owner not in owners.alive):
        return True, True
    if not row.expired:
        return False, False
    overdue = (row.db_now - row.lease_until).total_seconds() if row.lease_until else 0.0
    return overdue > STUCK_LEASES * owners.lease_seconds, False


async def _reap_ours(
    conn: AsyncConnection, tid: int, cid: int, max_attempts: int, owners: Owners | None
) -> bool:
    task = await lock_task(conn, tid)
    stmt, params = now_sql(conn, _CLAIM_ROW, lock=for_update(conn))
    row = (await conn.execute(stmt, {"t": tid, "c": cid, **params})).first()
    reap, counted = _verdict(row, owners)
    if task is None or row is None or not reap:
        return False
    attempts = row.attempts if counted else max(0, row.attempts - 1)
    give_up = counted and attempts >= max_attempts
    error = f"worker lost the chapter {attempts} times" if give_up else None
    now = chaishu_now()
    moved = await conn.execute(
        update(CS)
        .where(CS.kg_task_id == tid, CS.chapter_id == cid, CS.status == ChapterStatus.RUNNING)
        .values(status=ChapterStatus.FAILED if give_up else ChapterStatus.PENDING,
                error_message=error, updated_at=now, completed_at=now if give_up else None)
    )
    await conn.execute(
        update(CL).where(CL.task_id == tid, CL.chapter_id == cid)
        .values(token=None, owner=None, lease_until=None, last_error=error, attempts=attempts,
                row_updated_at=(None if give_up else now) if moved.rowcount
                else CL.row_updated_at)
    )
    if give_up and moved.rowcount:
        await count_finished(conn, task, failed=1)
    elif moved.rowcount:
        await pending.add(conn, tid, cid)
    return bool(moved.rowcount)


async def _reap_foreign(
    conn: AsyncConnection, tid: int, cid: int, max_attempts: int, owners: Owners | None
) -> bool:
    """A running row nobody holds: back to pending; our count for it starts anew (an old
    worker's lost chapter is not an attempt of ours, so ``max_attempts`` does not apply)."""
    del max_attempts, owners
    task = await lock_task(conn, tid)
    stmt, params = now_sql(conn, _CLAIM_ROW, lock=for_update(conn))
    row = (await conn.execute(stmt, {"t": tid, "c": cid, **params})).first()
    if task is None or (row is not None and row.token is not None):
        return False
    moved = await conn.execute(
        update(CS)
        .where(CS.kg_task_id == tid, CS.chapter_id == cid, CS.status == ChapterStatus.RUNNING)
        .values(status=ChapterStatus.PENDING, started_at=None, updated_at=chaishu_now())
    )
    if moved.rowcount:
        await pending.add(conn, tid, cid)
    return bool(moved.rowcount)


async def live_claims(engine: AsyncEngine, task_id: int) -> int:
    """Chapters of the task held under a lease that has not expired."""
    async with engine.connect() as conn:
        stmt, params = now_sql(conn, _LIVE)
        count = await conn.scalar(stmt, {"t": task_id, **params})
        return int(count or 0)
