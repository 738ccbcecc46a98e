"""The per-novel alias rows in MySQL (``kgworker_entity_aliases``): a locked read/append.

Resolution (:func:`kgworker.domain.resolution.resolve`, called by the handler) is a
read-modify-write of the novel's table: two chapters of one book resolved at the same
moment on two slots or nodes would each miss the other's new names and could give one
person two canonical names. So :meth:`AliasStore.locked` (reload, let the caller resolve,
INSERT IGNORE the rows it appends, commit) runs under a per-novel MySQL named lock
(``GET_LOCK``): held for
milliseconds, and released by the server if the node dies with it. The rows are committed
*before* the graph write, not with the chapter commit: keeping the lock across the graph
write would serialise every chapter of a book, and the rows are idempotent (unique key,
INSERT IGNORE, only ever added), so a chapter that fails later leaves facts a redo derives
again. Without the lock (timeout, or a database without named locks) the table still stays
well-formed: ``AliasTable.from_rows`` refuses conflicting aliases on load.

A node keeps each novel's rows in memory and fetches only rows with a higher id; a row
count that does not add up (rows were deleted by a restart) triggers a full reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.status import ChapterStatus
from kgworker.store.dialect import insert_ignore, is_server
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus, KnowledgeGraphTask
from kgworker.store.schema.ours import EntityAlias

log = logging.getLogger(__name__)

A = EntityAlias
_COLUMNS = (A.id, A.entity_type, A.alias, A.canonical, A.kind)
_NAMES = tuple(column.key for column in _COLUMNS)


@dataclass
class _Rows:
    rows: list[Mapping[str, Any]] = field(default_factory=list)
    max_id: int = 0


@dataclass
class AliasAppend:
    """What :meth:`AliasStore.locked` yields: the rows, and the rows to add."""

    rows: list[Mapping[str, Any]]
    appended: list[Mapping[str, Any]] = field(default_factory=list)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.appended.extend(rows)


def _newer_rows(novel_id: int, max_id: int) -> Select[Any]:
    """The novel's row count and its rows above ``max_id`` in one statement (one read view):
    at least one row comes back, carrying the count, with NULL columns when none is newer."""
    total = select(func.count().label("total")).where(A.novel_id == novel_id).subquery()
    newer = total.outerjoin(A, and_(A.novel_id == novel_id, A.id > max_id))
    return select(total.c.total, *_COLUMNS).select_from(newer).order_by(A.id)


def lock_name(novel_id: int) -> str:
    return f"kgworker:aliases:{novel_id}"


class AliasStore:
    """Loads, grows and resets the alias tables of the novels this node works on."""

    def __init__(
        self, engine: AsyncEngine, *, lock_timeout: float = 30.0, max_novels: int = 64
    ) -> None:
        self.engine = engine
        self.lock_timeout = lock_timeout
        self.max_novels = max_novels
        self._cache: OrderedDict[int, _Rows] = OrderedDict()
        self._guards: dict[int, asyncio.Lock] = {}
        self._named_locks = is_server(engine)

    async def rows(self, novel_id: int) -> list[Mapping[str, Any]]:
        """The novel's rows as committed now, in ``id`` order (for the next roster)."""
        async with self.engine.connect() as conn:
            return await self._refresh(conn, novel_id)

    @contextlib.asynccontextmanager
    async def locked(self, novel_id: int) -> AsyncIterator[AliasAppend]:
        """The novel's rows under its lock; rows the caller appends are committed on exit.

        The lock is released after the commit; a failure or cancellation closes the
        session instead of pooling it, so the server drops a lock it still holds.
        """
        async with self.engine.connect() as conn:
            locked = await self._lock(conn, novel_id)
            try:
                session = AliasAppend(await self._refresh(conn, novel_id))
                yield session
                if session.appended:
                    rows = [{"novel_id": novel_id, **row} for row in session.appended]
                    await conn.execute(insert_ignore(A), rows)
                await conn.commit()
            except BaseException:
                await _discard(conn, locked)
                raise
            await self._unlock(conn, novel_id, locked)

    async def reset_if_unused(self, novel_id: int) -> int:
        """Delete the novel's rows when no chapter of any of its tasks is completed or running.

        Then the novel has no graph written by us (a restart deleted it), and a table kept
        from the old run would change every prompt's roster, so a restarted task would pay
        for every call again instead of being answered from the response cache.
        """
        CS, T = KnowledgeGraphChapterStatus, KnowledgeGraphTask
        in_use = exists().where(
            CS.kg_task_id == T.id,
            T.novel_id == novel_id,
            CS.status.in_((ChapterStatus.COMPLETED, ChapterStatus.RUNNING)),
        )
        async with self.engine.connect() as conn:
            locked = await self._lock(conn, novel_id)
            try:
                result = await conn.execute(delete(A).where(A.novel_id == novel_id, ~in_use))
                await conn.commit()
            except BaseException:
                await _discard(conn, locked)
                raise
            await self._unlock(conn, novel_id, locked)
        deleted = int(result.rowcount or 0)
        if deleted:
            self._cache.pop(novel_id, None)
            log.info("alias table of novel %s reset (%d rows): no graph left", novel_id, deleted)
        return deleted

    # ------------------------------------------------------------------------ helpers --
    async def _refresh(self, conn: AsyncConnection, novel_id: int) -> list[Mapping[str, Any]]:
        guard = self._guards.setdefault(novel_id, asyncio.Lock())
        async with guard:
            cached = self._cache.get(novel_id) or _Rows()
            fetched = (await conn.execute(_newer_rows(novel_id, cached.max_id))).mappings().all()
            count = fetched[0]["total"] if fetched else 0
            rows: list[Mapping[str, Any]] = [*cached.rows, *(
                {key: row[key] for key in _NAMES} for row in fetched if row["id"] is not None)]
            if int(count or 0) != len(rows):  # rows deleted meanwhile: start over
                full = await conn.execute(
                    select(*_COLUMNS).where(A.novel_id == novel_id).order_by(A.id)
                )
                rows = [dict(row) for row in full.mappings()]
            self._cache[novel_id] = _Rows(rows, int(rows[-1]["id"]) if rows else 0)
            self._cache.move_to_end(novel_id)
            while len(self._cache) > self.max_novels:
                old, _ = self._cache.popitem(last=False)
                self._guards.pop(old, None)
            return rows

    async def _lock(self, conn: AsyncConnection, novel_id: int) -> bool:
        if not self._named_locks:
            return False
        got = await conn.scalar(
            text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": lock_name(novel_id), "timeout": self.lock_timeout},
        )
        if got != 1:
            log.warning("alias lock of novel %s not taken in %g s: resolving without it",
                        novel_id, self.lock_timeout)
        return bool(got == 1)

    async def _unlock(self, conn: AsyncConnection, novel_id: int, locked: bool) -> None:
        if not locked:
            return
        try:
            await conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": lock_name(novel_id)})
            await conn.commit()
        except BaseException:
            await _discard(conn, locked)
            raise


async def _discard(conn: AsyncConnection, locked: bool) -> None:
    """Close the session instead of pooling it: the server then drops its named lock."""
    if locked:
        try:
            await asyncio.shield(conn.invalidate())
        except Exception:
            log.debug("connection invalidation failed", exc_info=True)
