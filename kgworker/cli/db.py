"""``kgworker db upgrade|current``: the MySQL schema of kgworker (chaishu tables untouched)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer

from kgworker.config import Settings

R = TypeVar("R")


async def _upgrade(settings: Settings, revision: str) -> tuple[str | None, str | None]:
    from kgworker.store.migrate import current_revision, upgrade
    from kgworker.store.mysql import create_engine

    engine = create_engine(settings)
    try:
        before = await current_revision(engine)
        await upgrade(engine, revision)
        return before, await current_revision(engine)
    finally:
        await engine.dispose()


async def _current(settings: Settings) -> str | None:
    from kgworker.store.migrate import current_revision
    from kgworker.store.mysql import create_engine

    engine = create_engine(settings)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


def _or_exit(settings: Settings, work: Coroutine[Any, Any, R]) -> R:
    """Run ``work``; a MySQL that cannot be used is one line (store, endpoint, reason), exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from kgworker.store.errors import describe
    from kgworker.store.migrate import MigrationLockTimeout

    try:
        return asyncio.run(work)
    except MigrationLockTimeout as exc:
        typer.echo(f"error: {exc}", err=True)
    except (SQLAlchemyError, OSError) as exc:
        typer.echo(f"error: {describe(settings, 'mysql', exc)}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="MySQL schema: chaishu tables if absent, then kgworker_* tables.")
    app.add_typer(db, name="db")

    @db.command()
    def upgrade(
        revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    ) -> None:
        """Create missing chaishu tables, apply kgworker's migrations (chaishu's never altered)."""
        from kgworker.cli import settings_or_exit

        settings = settings_or_exit()
        before, after = _or_exit(settings, _upgrade(settings, revision))
        endpoint = settings.endpoints()["mysql"]
        typer.echo(f"{endpoint}: {before or 'empty'} -> {after}")

    @db.command()
    def current() -> None:
        """Print the revision the database is at."""
        from kgworker.cli import settings_or_exit

        settings = settings_or_exit()
        typer.echo(_or_exit(settings, _current(settings)) or "none")
