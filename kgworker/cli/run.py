"""``kgworker run``: start this node's worker (the container entry point).

The common settings have flags of their own (the chaishu and EasySight names); any other
setting can be given as ``--set NAME=VALUE``. Flags beat the environment, which beats
``--config FILE``, which beats ``.env``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from kgworker.config import Settings


def _run_async(settings: Settings) -> int:
    """Run the worker under uvloop when it is installed, else the default loop."""
    from kgworker.chaishu.node import run_worker

    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_worker(settings))
    return int(uvloop.run(run_worker(settings)))


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs (variable names, any case) to setting overrides."""
    overrides: dict[str, Any] = {}
    problems: list[str] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        field = name.strip().lower()
        if not sep or field not in Settings.model_fields:
            problems.append(f"--set {pair!r}: expected NAME=VALUE with a known variable name")
            continue
        overrides[field] = value
    if problems:
        for problem in problems:
            typer.echo(f"config error: {problem}", err=True)
        raise typer.Exit(2)
    return overrides


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        node_name: Annotated[
            str | None, typer.Option("--node-name", help="KG_WORKER_NODE_NAME")
        ] = None,
        providers: Annotated[
            str | None, typer.Option("--providers", help="KG_WORKER_PROVIDERS (comma list)")
        ] = None,
        workers_per_provider: Annotated[
            int | None,
            typer.Option("--workers-per-provider", "--pool-size", help="KG_WORKERS_PER_PROVIDER"),
        ] = None,
        max_total: Annotated[
            int | None,
            typer.Option("--max-total", "--max-concurrent-tasks", help="KG_MAX_TOTAL_PROCESSES"),
        ] = None,
        max_per_provider: Annotated[
            int | None, typer.Option("--max-per-provider", help="KG_MAX_PROCESSES_PER_PROVIDER")
        ] = None,
        heartbeat_interval: Annotated[
            float | None, typer.Option("--heartbeat-interval", help="KG_HEARTBEAT_INTERVAL")
        ] = None,
        log_level: Annotated[str | None, typer.Option("--log-level", help="LOG_LEVEL")] = None,
        log_file: Annotated[Path | None, typer.Option("--log-file", help="LOG_FILE")] = None,
        log_format: Annotated[
            str | None, typer.Option("--log-format", help="LOG_FORMAT: text or json")
        ] = None,
        api: Annotated[
            bool | None, typer.Option("--api/--no-api", help="KG_API_ENABLED", show_default=False)
        ] = None,
        api_host: Annotated[str | None, typer.Option("--api-host", help="KG_API_HOST")] = None,
        api_port: Annotated[int | None, typer.Option("--api-port", help="KG_API_PORT")] = None,
        api_token: Annotated[
            str | None, typer.Option("--api-token", help="KG_API_TOKEN (prefer the env)")
        ] = None,
        no_cache: Annotated[
            bool, typer.Option("--no-cache", help="Bypass the LLM response cache (KG_LLM_CACHE)")
        ] = False,
        sets: Annotated[
            list[str] | None,
            typer.Option("--set", help="Any setting as NAME=VALUE (repeatable)"),
        ] = None,
        config: Annotated[
            Path | None, typer.Option("--config", help="Settings file (dotenv syntax).")
        ] = None,
    ) -> None:
        """Claim and work tasks until SIGTERM/SIGINT (a second signal skips the grace)."""
        from kgworker.cli import settings_or_exit
        from kgworker.observe.logging import setup_logging

        overrides: dict[str, Any] = _parse_sets(sets or [])
        overrides.update(
            {
                "kg_worker_node_name": node_name,
                "kg_worker_providers": providers,
                "kg_workers_per_provider": workers_per_provider,
                "kg_max_total_processes": max_total,
                "kg_max_processes_per_provider": max_per_provider,
                "kg_heartbeat_interval": heartbeat_interval,
                "log_level": log_level,
                "log_file": log_file,
                "log_format": log_format,
                "kg_api_enabled": api,
                "kg_api_host": api_host,
                "kg_api_port": api_port,
                "kg_api_token": api_token,
                "kg_llm_cache": False if no_cache else None,
            }
        )
        settings = settings_or_exit(overrides, config)
        if settings.node_role == "web":
            typer.echo("config error: NODE_ROLE: 'web' nodes do not run workers", err=True)
            raise typer.Exit(2)
        setup_logging(settings)  # the worker logs its banner (node, providers, limits, stores)
        code = _run_async(settings)
        if code:
            raise typer.Exit(code)
