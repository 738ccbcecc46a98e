"""``kgworker doctor``: can this node reach its stores, and is work stuck in them?

Exit 1 if a store is unreachable or a queue/lease check fails.
"""

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
        # Queue and lease state inside the stores that answered (issue 7).
        from kgworker.observe.checks import FAIL, state_checks

        ok = {check.store: check.ok for check in checks}
        findings = asyncio.run(
            state_checks(settings, redis_ok=ok["redis"], mysql_ok=ok["mysql"])
        )
        for finding in findings:
            typer.echo(f"{finding.level:<5} {finding.subject:<6} {finding.message}")
        if not all(ok.values()) or any(f.level == FAIL for f in findings):
            raise typer.Exit(1)
