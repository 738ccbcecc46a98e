"""Run the Alembic migrations kept inside the package, on the async engine.

Why programmatic: the worker ships as a wheel or an image without an ``alembic.ini``; the
scripts live in ``kgworker/store/migrations`` and ``kgworker db upgrade`` runs them on a
connection lent by the async engine.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.store.schema.base import VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Prefix of the named lock; the lock is the server's, so the database name is part of it.
MIGRATION_LOCK = "kgworker_migrate"
#: How long an upgrade waits for another one (a pod's init container) to finish.
LOCK_TIMEOUT_SECONDS = 600.0
_GET_LOCK = text("SELECT GET_LOCK(:name, :timeout)")
_RELEASE_LOCK = text("SELECT RELEASE_LOCK(:name)")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migrations found")
    return head


class MigrationLockTimeout(RuntimeError):
    """Another ``kgworker db upgrade`` held the migration lock longer than we would wait."""


def lock_name(database: str) -> str:
    """The server-wide named lock of one database's migrations (MySQL allows 64 chars)."""
    return f"{MIGRATION_LOCK}:{database}"[:64]


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, lock_timeout: float = LOCK_TIMEOUT_SECONDS
) -> None:
    """Apply migrations up to ``revision``; chaishu tables are only created where absent.

    Serialised by a MySQL named lock (``GET_LOCK``) per database, so the init containers
    of several pods can run it at once: one migrates, the others wait for it and then find
    the schema at head. Raises :class:`MigrationLockTimeout` after ``lock_timeout`` s.
    """

    def _run(connection: Connection) -> None:
        locked = connection.dialect.name in ("mysql", "mariadb")
        name = ""
        if locked:
            name = lock_name(str(connection.exec_driver_sql("SELECT DATABASE()").scalar()))
            got = connection.execute(_GET_LOCK, {"name": name, "timeout": lock_timeout}).scalar()
            connection.commit()  # a fresh transaction reads what the last holder committed
            if got != 1:
                raise MigrationLockTimeout(
                    f"another kgworker db upgrade held {name!r} for over {lock_timeout:g} s"
                )
        try:
            if locked:
                _create_version_table(connection)
            config = alembic_config()
            config.attributes["connection"] = connection
            with connection.begin():
                command.upgrade(config, revision)
        finally:
            if locked:
                connection.execute(_RELEASE_LOCK, {"name": name})
                connection.commit()

    async with engine.connect() as conn:
        await conn.run_sync(_run)


def _create_version_table(connection: Connection) -> None:
    """Alembic names the version table's primary key, which MySQL ignores with a warning
    on every fresh database; created here first (same columns, an unnamed key), Alembic
    finds it and creates nothing."""
    if not inspect(connection).has_table(VERSION_TABLE):
        connection.exec_driver_sql(
            f"CREATE TABLE {VERSION_TABLE} "
            "(version_num VARCHAR(32) NOT NULL, PRIMARY KEY (version_num))"
        )
    connection.commit()  # the look-up began a transaction; Alembic begins its own


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""

    def _read(connection: Connection) -> str | None:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        )
        return context.get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)
