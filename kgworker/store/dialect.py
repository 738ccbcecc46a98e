"""Where the store's SQL differs between MySQL/MariaDB and SQLite, decided in one place.

Production runs on MySQL or MariaDB: leases are on the database clock (``NOW(6)``), so
nodes with skewed clocks agree on who holds a chapter, and upserts are ``ON DUPLICATE
KEY``. The embedded demo runs the same store code on SQLite (one process, one clock): there
the clock is Python's and upserts are ``ON CONFLICT``. Every other module asks here instead
of testing the dialect itself.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, literal, literal_column, text
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.expression import Executable

from kgworker.store.schema.base import PreciseDateTime


class Dialect(enum.Enum):
    MYSQL = "mysql"  #: MySQL or MariaDB (asyncmy)
    SQLITE = "sqlite"  #: the embedded demo (aiosqlite)


def dialect_of(bind: AsyncEngine | AsyncConnection) -> Dialect:
    name = bind.dialect.name
    if name in ("mysql", "mariadb"):
        return Dialect.MYSQL
    if name == "sqlite":
        return Dialect.SQLITE
    raise ValueError(f"unsupported database dialect {name!r}")


def is_server(bind: AsyncEngine | AsyncConnection) -> bool:
    """A database server shared by a fleet (MySQL/MariaDB): its clock, named locks, the
    fleet duties. False for the demo's single-process SQLite."""
    return dialect_of(bind) is Dialect.MYSQL


def _py_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def clock_after(conn: AsyncConnection, microseconds: int) -> Any:
    """The lease clock plus ``microseconds``, as a value for an INSERT or UPDATE."""
    if is_server(conn):
        return literal_column(f"NOW(6) + INTERVAL {int(microseconds)} MICROSECOND")
    return _py_now() + timedelta(microseconds=microseconds)


def now_sql(conn: AsyncConnection, query: str, **fmt: str) -> tuple[Any, dict[str, Any]]:
    """``query`` with ``{now}`` as ``NOW(6)`` (server) or a typed ``:now`` parameter."""
    if is_server(conn):
        return text(query.format(now="NOW(6)", **fmt)), {}
    stmt = text(query.format(now=":now", **fmt)).bindparams(
        bindparam("now", type_=PreciseDateTime)
    )
    return stmt, {"now": _py_now()}


def for_update(conn: AsyncConnection) -> str:
    """`` FOR UPDATE`` where row locks exist (SQLite transactions take turns instead)."""
    return " FOR UPDATE" if is_server(conn) else ""


def upsert(
    conn: AsyncConnection,
    table: Table | Any,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
    update: Callable[[Any], Mapping[str, ColumnElement[Any] | Any]],
) -> Executable:
    """INSERT ``values``; on a duplicate ``keys`` row, SET ``update(new)`` where ``new`` are
    the proposed values (``inserted`` / ``excluded``)."""
    return _upsert(conn, table, values, keys, update)


async def upsert_rows(
    conn: AsyncConnection,
    table: Table | Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    update: Callable[[Any], Mapping[str, ColumnElement[Any] | Any]],
) -> None:
    """:func:`upsert` of several rows (all with the same columns, plain values) in one
    statement.

    The rows are the parameters of one execute (the driver sends them as one multi-row
    INSERT), not ``.values([...])``: SQLAlchemy does not cache a multi-VALUES statement,
    so it compiled one for every call (~10 % of a loaded node's CPU, measured).
    """
    if rows:
        await conn.execute(_upsert(conn, table, None, keys, update), list(rows))


def _upsert(
    conn: AsyncConnection,
    table: Table | Any,
    values: Mapping[str, Any] | None,
    keys: Sequence[str],
    update: Callable[[Any], Mapping[str, ColumnElement[Any] | Any]],
) -> Executable:
    if is_server(conn):
        server = mysql_insert(table) if values is None else mysql_insert(table).values(values)
        return server.on_duplicate_key_update(**update(server.inserted))
    lite = sqlite_insert(table) if values is None else sqlite_insert(table).values(values)
    return lite.on_conflict_do_update(index_elements=list(keys), set_=dict(update(lite.excluded)))


def clock_column(conn: AsyncConnection) -> ColumnElement[datetime]:
    """The lease clock as a column to read along with a query's own columns (``NOW(6)`` on
    a server, Python's clock on SQLite), for values that must be plain parameters."""
    if is_server(conn):
        return func.now(6, type_=PreciseDateTime)
    return literal(_py_now(), PreciseDateTime)


def insert_ignore(table: Table | Any) -> Executable:
    """INSERT that skips rows already present (unique key), on every dialect."""
    from sqlalchemy import insert

    return (
        insert(table)
        .prefix_with("IGNORE", dialect="mysql")
        .prefix_with("IGNORE", dialect="mariadb")
        .prefix_with("OR IGNORE", dialect="sqlite")
    )
