"""``kgworker status``: the fleet on one screen (nodes, providers, tasks).

``--json`` prints the same snapshot as ``/status`` for scripts; ``--watch`` refreshes it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer

from kgworker.config import Settings


async def snapshot(settings: Settings, node: str | None = None) -> dict[str, Any]:
    from kgworker.observe.status import gather
    from kgworker.queue.connection import create_redis
    from kgworker.store.mysql import create_engine

    redis = create_redis(settings, socket_timeout=5)
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        return await gather(settings, redis, engine, node_name=node)
    finally:
        await redis.aclose()
        await engine.dispose()


def _unknown_node(data: dict[str, Any], node: str | None) -> str | None:
    """The error line when ``--node`` names a node the registry does not list."""
    if node is None or "redis" in data["errors"]:
        return None
    names = [n["name"] for n in data["nodes"]]
    if node in names:
        return None
    from kgworker.keys import node_key

    return f"error: no node named {node!r} is registered (no {node_key(node)}); " \
        "see `kgworker status` for the nodes there are"


async def _liveness(settings: Settings, node: str, max_age: float) -> tuple[bool, str]:
    from kgworker.observe.liveness import check_node
    from kgworker.queue.connection import REDIS_ERRORS, create_redis
    from kgworker.store.errors import describe

    redis = create_redis(settings, socket_timeout=5)
    try:
        found = await check_node(redis, node, max_age)
    except REDIS_ERRORS as exc:
        return False, f"node {node}: unknown, {describe(settings, 'redis', exc)}"
    finally:
        await redis.aclose()
    return found.alive, found.message


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
        watch: Annotated[
            float | None,
            typer.Option("--watch", help="Refresh every N seconds until Ctrl-C.", min=0.5),
        ] = None,
        node: Annotated[
            str | None, typer.Option("--node", help="Only this node (exit 1 if it is unknown).")
        ] = None,
        check: Annotated[
            bool,
            typer.Option("--check", help="With --node: exit 0 if the node is registered and "
                         "heartbeating, else 1; one line says why (a liveness probe)."),
        ] = False,
        max_age: Annotated[
            float | None,
            typer.Option("--max-age", min=1, help="With --check: the oldest heartbeat that "
                         "counts as alive, seconds. [default: 3 x KG_HEARTBEAT_INTERVAL]"),
        ] = None,
    ) -> None:
        """Nodes, providers (queue, in flight, DLQ, pause, rate use) and running tasks."""
        from kgworker.cli import settings_or_exit
        from kgworker.cli.help import usage_error

        if check and node is None:
            usage_error(ctx, "--check needs --node NAME")
        settings = settings_or_exit()
        if check:
            assert node is not None
            limit = max_age if max_age is not None else 3 * settings.kg_heartbeat_interval
            alive, message = asyncio.run(_liveness(settings, node, limit))
            typer.echo(message, err=not alive)
            raise typer.Exit(0 if alive else 1)
        from rich.console import Console
        from rich.live import Live

        from kgworker.cli.status_view import render

        console = Console()
        if watch is None:
            data = asyncio.run(snapshot(settings, node))
            unknown = _unknown_node(data, node)
            if unknown:
                typer.echo(unknown, err=True)
                raise typer.Exit(1)
            if as_json:
                typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
            else:
                console.print(render(data))
            if data["errors"]:
                raise typer.Exit(1)
            return
        try:
            data = asyncio.run(snapshot(settings, node))
            unknown = _unknown_node(data, node)
            if unknown:
                typer.echo(unknown, err=True)
                raise typer.Exit(1)
            if as_json:  # one JSON document per line, for a pipe
                while True:
                    typer.echo(json.dumps(data, ensure_ascii=False, default=str))
                    time.sleep(watch)
                    data = asyncio.run(snapshot(settings, node))
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(render(data), refresh=True)
                    time.sleep(watch)
                    data = asyncio.run(snapshot(settings, node))
        except KeyboardInterrupt:
            return
