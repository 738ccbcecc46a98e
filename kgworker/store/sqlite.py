"""An SQLite engine (aiosqlite) on which the chaishu store code is correct, for the demo.

Why ``BEGIN IMMEDIATE``: Python's sqlite3 opens a transaction only at the first write, so
the ``SELECT … FOR UPDATE`` the store relies on (SQLite drops ``FOR UPDATE``) would read
outside any lock. Taking the write lock when the transaction begins makes transactions
take turns, which is what the MySQL row locks give: a task row read under "lock" cannot
change before commit, and of two claimers of one chapter exactly one sees it ``pending``.
The busy timeout makes the others wait instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: Seconds a transaction waits for another one's write lock before failing.
BUSY_TIMEOUT = 60.0


def create_sqlite_engine(path: Path | str, *, echo: bool = False) -> AsyncEngine:
    """An engine on the SQLite file ``path`` whose transactions take turns."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{Path(path)}", echo=echo,
        connect_args={"timeout": BUSY_TIMEOUT},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
