"""Short MySQL transactions that survive deadlocks, at READ COMMITTED.

Why READ COMMITTED: counters are recounted from the chapter rows after the task row is
locked; under REPEATABLE READ that recount could read an old snapshot and write a stale
count. Why the retry: several nodes finishing chapters of one book contend on the same task
row, and InnoDB resolves a rare lock cycle by killing one transaction (1213) — it is safe
to run the whole transaction again.

Why once per connection: an engine-level ``isolation_level`` is applied when the pool opens a
connection; the execution-option view instead sets the level on every checkout and resets
it on every return, each a ``SET`` plus a ``COMMIT``. :func:`kgworker.store.mysql.create_engine`
connects at READ COMMITTED and says so with :data:`CONNECT_ISOLATION`, so
:func:`read_committed` hands that engine back unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.store.dialect import is_server
from kgworker.store.pool_events import mark_committed

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT, ER_CHECKREAD (InnoDB snapshot conflict).
RETRYABLE_MYSQL_ERRORS = frozenset({1213, 1205, 1020})
READ_COMMITTED = "READ COMMITTED"
#: Execution option naming the isolation level every new connection of the engine is set to
#: (SQLAlchemy keeps the ``create_engine(isolation_level=...)`` value only privately).
CONNECT_ISOLATION = "kgworker_connect_isolation"


def connect_isolation(engine: AsyncEngine) -> str | None:
    """The level ``engine``'s transactions run at, when it is known without asking the server:
    the ``isolation_level`` execution option, else the level its connections were opened at."""
    options = engine.get_execution_options()
    level = options.get("isolation_level") or options.get(CONNECT_ISOLATION)
    return str(level) if level else None


def read_committed(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` itself when it already runs READ COMMITTED, else a view that does (for
    engines made elsewhere; it sets the level per checkout, see the module docstring).

    SQLite (the embedded demo) has no such level and needs none: its writers take turns
    (``BEGIN IMMEDIATE``, see :mod:`kgworker.store.sqlite`), so a recount is never stale.
    """
    if not is_server(engine):
        return engine
    if connect_isolation(engine) == READ_COMMITTED:
        return engine
    return engine.execution_options(isolation_level=READ_COMMITTED)


def mysql_error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


async def in_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], *, attempts: int = 6
) -> T:
    """Run ``work`` in one transaction; run it again from scratch after a deadlock."""
    for attempt in range(attempts):
        try:
            async with engine.connect() as conn:
                async with conn.begin():
                    result = await work(conn)
                mark_committed(conn)  # its return needs no ROLLBACK (store.pool_events)
                return result
        except DBAPIError as exc:
            code = mysql_error_code(exc)
            if code not in RETRYABLE_MYSQL_ERRORS or attempt == attempts - 1:
                raise
            log.debug("transaction retried after MySQL error %s", code)
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover
