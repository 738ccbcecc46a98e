"""``kgworker status``: the fleet on one screen (nodes, providers, tasks).

``--json`` prints the same snapshot as ``/status`` for scripts; ``--watch`` refreshes it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _used(used: int, limit: int) -> str:
    return f"{used}/{limit}" if limit else f"{used}/∞"


def render(data: dict[str, Any]) -> Group:
    """Three tables; a half that could not be read shows its reason instead."""
    nodes = Table(title="Nodes", title_justify="left", expand=False)
    for column in ("node", "alive", "last heartbeat", "version", "slots busy/total", "providers"):
        nodes.add_column(column)
    for n in data["nodes"]:
        served = ", ".join(f"{p}:{c}" for p, c in sorted(n["providers"].items()))
        nodes.add_row(
            n["name"],
            "[green]yes[/]" if n["alive"] else "[red]no[/]",
            str(n["last_heartbeat"])[:19].replace("T", " "),
            str(n["version"] or "?"),
            f"{n['busy']}/{n['slots']}" + (f" (max {n['limit']})" if n.get("limit") else ""),
            served or "—",
        )
    providers = Table(title="Providers", title_justify="left")
    for column in ("provider", "queued", "in flight", "DLQ", "slots busy/live", "paused",
                   "requests/window", "tokens/window"):
        providers.add_column(column, justify="left" if column == "provider" else "right")
    for p in data["providers"]:
        paused = "—"
        if p["paused"]:
            paused = f"[red]{_duration(p['paused_for_seconds'])} left[/]"
        providers.add_row(
            p["provider"],
            str(p["queued"]),
            str(p["claimed"]),
            f"[red]{p['dead']}[/]" if p["dead"] else "0",
            f"{p['busy_slots']}/{p['live_slots']}",
            paused,
            _used(p["requests_used"], p["rpm_limit"]),
            _used(p["tokens_used"], p["tpm_limit"]),
        )
    tasks = Table(title="Tasks", title_justify="left")
    for column in ("task", "book", "status", "done/total", "failed", "chapters/min", "ETA"):
        right = column in ("failed", "chapters/min")
        tasks.add_column(column, justify="right" if right else "left")
    for t in data["tasks"]:
        tasks.add_row(
            str(t["task_id"]),
            str(t["book"]),
            t["status"],
            f"{t['done']}/{t['total']}",
            str(t["failed"]),
            f"{t['rate_per_min']:.1f}",
            _duration(t["eta_seconds"]),
        )
    parts: list[Any] = [nodes, providers, *_flow_tables(data), tasks]
    for store, reason in data.get("errors", {}).items():
        parts.append(f"[red]{store} unreadable: {reason}[/]")
    parts.append(f"[dim]{data['generated_at']}[/]")
    return Group(*parts)


def _flow_tables(data: dict[str, Any]) -> list[Table]:
    """Adaptive targets and their recent changes; fallback chains and moved tasks."""
    tables: list[Table] = []
    if data.get("adaptive"):
        adaptive = Table(title="Adaptive concurrency", title_justify="left")
        for column in ("provider", "mode", "target", "in flight", "floor ms", "last change",
                       "recent targets"):
            adaptive.add_column(column, justify="right" if column in ("target", "in flight",
                                                                      "floor ms") else "left")
        now = time.time()
        for a in data["adaptive"]:
            changed = a.get("changed_at")
            last = f"{a.get('reason') or '—'} ({_duration(now - changed)} ago)" if changed else "—"
            recent = " ← ".join(str(h["new"]) for h in a.get("history", [])[:8])
            floor = a.get("floor_ms")
            adaptive.add_row(a["provider"], a["mode"], str(a["target"]), str(a["in_flight"]),
                             "—" if floor is None else f"{floor:.0f}", last, recent or "—")
        tables.append(adaptive)
    if data.get("fallback") or data.get("moves"):
        moves = Table(title="Fallback", title_justify="left")
        for column in ("provider / task", "backups / moved", "state", "chapters by producer"):
            moves.add_column(column)
        for f in data.get("fallback", []):
            state = "on" if f["enabled"] else "off"
            if f["enabled"] and f["suspended"]:
                state = f"[yellow]moving to {f['target_now'] or 'nothing healthy'}[/]"
            moves.add_row(f["provider"], " → ".join(f["backups"]), state, "")
        for m in data.get("moves", []):
            producers = ", ".join(f"{k}: {v}" for k, v in m["chapters_by_producer"].items())
            moves.add_row(f"task {m['task_id']}", f"{m['from']} → {m['to']}",
                          str(m["moved_at"] or "")[:19].replace("T", " "), producers or "—")
        tables.append(moves)
    return tables


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
