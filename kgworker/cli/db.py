"""``kgworker db upgrade|current``: the MySQL schema of kgworker (chaishu tables untouched)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from kgworker.config import Settings


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


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="MySQL schema: chaishu tables if absent, then kgworker_* tables.")
    app.add_typer(db, name="db")

    @db.command()
    def upgrade(
        revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    ) -> None:
        """Create missing chaishu tables, apply kgworker's migrations (chaishu's never altered)."""
        from kgworker.cli import settings_or_exit
        from kgworker.store.migrate import MigrationLockTimeout

        settings = settings_or_exit()
        try:
            before, after = asyncio.run(_upgrade(settings, revision))
        except MigrationLockTimeout as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        endpoint = settings.endpoints()["mysql"]
        typer.echo(f"{endpoint}: {before or 'empty'} -> {after}")

    @db.command()
    def current() -> None:
        """Print the revision the database is at."""
        from kgworker.cli import settings_or_exit

        typer.echo(asyncio.run(_current(settings_or_exit())) or "none")
