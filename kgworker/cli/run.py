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

from kgworker.cli.help import setting_help as h
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
            str | None, typer.Option("--node-name", help=h("kg_worker_node_name"))
        ] = None,
        providers: Annotated[
            str | None,
            typer.Option("--providers", help=h("kg_worker_providers",
                         "Providers to serve, comma list; empty = active ai_providers + rules")),
        ] = None,
        workers_per_provider: Annotated[
            int | None,
            typer.Option("--workers-per-provider", "--pool-size", min=1,
                         help=h("kg_workers_per_provider")),
        ] = None,
        max_total: Annotated[
            int | None,
            typer.Option("--max-total", "--max-concurrent-tasks", min=1,
                         help=h("kg_max_total_processes")),
        ] = None,
        max_per_provider: Annotated[
            int | None,
            typer.Option("--max-per-provider", min=1, help=h("kg_max_processes_per_provider")),
        ] = None,
        heartbeat_interval: Annotated[
            float | None,
            typer.Option("--heartbeat-interval", help=h("kg_heartbeat_interval")),
        ] = None,
        log_level: Annotated[
            str | None, typer.Option("--log-level", help=h("log_level", "Log level: "
                                     "DEBUG, INFO, WARNING, ERROR or CRITICAL"))
        ] = None,
        log_file: Annotated[
            Path | None, typer.Option("--log-file", help=h("log_file"))
        ] = None,
        log_format: Annotated[
            str | None, typer.Option("--log-format", help=h("log_format", "Log lines: text "
                                     "or json"))
        ] = None,
        api: Annotated[
            bool | None,
            typer.Option("--api/--no-api", show_default=False,
                         help=h("kg_api_enabled", "Serve /metrics, /healthz, /readyz, /status "
                                "and the fleet page")),
        ] = None,
        api_host: Annotated[
            str | None, typer.Option("--api-host", help=h("kg_api_host"))
        ] = None,
        api_port: Annotated[
            int | None, typer.Option("--api-port", help=h("kg_api_port"))
        ] = None,
        api_token: Annotated[
            str | None,
            typer.Option("--api-token", help=h("kg_api_token", "Bearer token of the HTTP "
                         "endpoint (prefer the variable: flags show in ps)")),
        ] = None,
        no_cache: Annotated[
            bool,
            typer.Option("--no-cache", help="Bypass the LLM response cache (sets KG_LLM_CACHE="
                         "false)."),
        ] = False,
        burst: Annotated[
            bool,
            typer.Option("--burst", help="Stop with exit 0 once the served queues and their "
                         "open tasks are empty (cron, batch jobs, notebooks; sets KG_BURST)."),
        ] = False,
        sets: Annotated[
            list[str] | None,
            typer.Option("--set", metavar="NAME=VALUE",
                         help="Any other setting, by its variable name (repeatable)."),
        ] = None,
        config: Annotated[
            Path | None, typer.Option("--config", help="Settings file (dotenv syntax).")
        ] = None,
    ) -> None:
        """Claim and work tasks until SIGTERM/SIGINT (a second signal skips the grace), or
        with --burst until nothing is left to do.

        Exit 0 when stopped, 1 when a store stayed unreachable past KG_STORE_DEADLINE, 2 on
        a configuration error or a store refusing the credentials (no restart helps).
        """
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
                "kg_burst": True if burst else None,
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
