"""``kgworker doctor``: can this node reach its stores? Exit 1 if any check fails."""

from __future__ import annotations

import asyncio
import logging

import typer

from kgworker.observe.health import check_stores


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor() -> None:
        """Connect to Redis, MySQL and Neo4j; print version and round-trip time of each."""
        from kgworker.cli import settings_or_exit

        settings = settings_or_exit()
        logging.getLogger("neo4j").setLevel(logging.CRITICAL)  # its reasons are printed below
        checks = asyncio.run(check_stores(settings))
        for check in checks:
            if check.ok:
                typer.echo(
                    f"OK    {check.store:<6} {check.endpoint}  version {check.version}"
                    f"  rtt {check.rtt_ms:.1f} ms"
                )
            else:
                typer.echo(f"FAIL  {check.store:<6} {check.endpoint}  {check.error}")
        if not all(check.ok for check in checks):
            raise typer.Exit(1)
