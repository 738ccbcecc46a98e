"""Pool events that spare a round trip per transaction: idle-only pings, no reset after COMMIT.

**Pings.** SQLAlchemy's ``pool_pre_ping`` pings on every checkout; under load a connection
goes back to the pool and out again within milliseconds, so each transaction paid a ping
for nothing. A connection the server dropped (``KILL``, ``wait_timeout``, a restart) is
found stale after it sat in the pool, so each connection remembers when it was returned
and is pinged on checkout only when it has been idle longer than DB_POOL_PING_IDLE. A
failed ping raises :class:`~sqlalchemy.exc.InvalidatePoolError` (as SQLAlchemy's own
pre-ping does): the pool replaces this connection and every one opened before it,
transparently to the caller. A connection opened for this checkout is never pinged.

**Reset on return.** The pool rolls a returned connection back unless SQLAlchemy itself
just rolled it back, so every committed transaction paid one ``ROLLBACK`` more. A
connection whose transaction :func:`kgworker.store.txn.in_transaction` has just committed
is marked :data:`COMMITTED`; it goes back without the rollback. Every other return (a
failed or cancelled commit, raw use, a read) is rolled back as before.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: Where a pooled connection's record keeps the monotonic time it was last returned.
RETURNED_AT = "kgworker_returned_at"
#: Set on a connection's record right after its transaction committed, until its return.
COMMITTED = "kgworker_committed"


def mark_committed(conn: AsyncConnection) -> None:
    """Say ``conn``'s transaction has just committed: its return needs no rollback."""
    conn.sync_connection.connection.info[COMMITTED] = True  # type: ignore[union-attr]


def ping_when_idle(engine: AsyncEngine, idle: float) -> None:
    """Ping ``engine``'s pooled connections on checkout once idle more than ``idle`` s
    (``0``: on every checkout of a connection that was used before)."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    def checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:  # None: the connection was invalidated
            record.info[RETURNED_AT] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get(RETURNED_AT)
        if returned is None or time.monotonic() - returned < idle:
            return  # opened just now (a reconnect clears ``info``), or in use a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if not dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            raise InvalidatePoolError(f"pooled connection lost while idle: {exc}") from exc
        if not alive:
            raise InvalidatePoolError("pooled connection did not answer a ping")

    event.listen(sync_engine, "checkin", checkin)
    event.listen(sync_engine, "checkout", checkout)


def skip_reset_after_commit(engine: AsyncEngine) -> None:
    """Roll back returned connections, except one marked :data:`COMMITTED`; ``engine`` must
    have been made with ``pool_reset_on_return=None`` (this replaces the pool's reset)."""
    sync_engine = engine.sync_engine

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        record.info.pop(COMMITTED, None)  # never trust a mark from an earlier use

    def reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        committed = record.info.pop(COMMITTED, False) if record is not None else False
        if state.transaction_was_reset or committed or not state.asyncio_safe:
            return  # rolled back already, committed just now, or about to be terminated
        dbapi_connection.rollback()

    event.listen(sync_engine, "checkout", checkout)
    event.listen(sync_engine, "reset", reset)
