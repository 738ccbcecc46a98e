"""``kgworker config show``: the effective settings and where each came from."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kgworker.config import describe_settings, reference


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def show(
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Print every setting, its value (secrets redacted) and its source."""
        from kgworker.cli import settings_or_exit

        rows = describe_settings(settings_or_exit())
        if as_json:
            typer.echo(
                json.dumps(
                    {name: {"value": value, "source": source} for name, value, source in rows},
                    indent=2,
                    ensure_ascii=False,
                )
            )
            return
        width = max(len(name) for name, _, _ in rows)
        value_width = min(48, max(len(value) for _, value, _ in rows))
        for name, value, source in rows:
            typer.echo(f"{name:<{width}}  {value:<{value_width}}  {source}")

    @config_app.command("reference")
    def reference_cmd(
        fmt: Annotated[
            str, typer.Option("--format", help="markdown (README table) or dotenv (.env.example)")
        ] = "markdown",
    ) -> None:
        """Print every variable with its default and meaning."""
        if fmt not in ("markdown", "dotenv"):
            typer.echo(f"--format: expected markdown or dotenv, got {fmt!r}", err=True)
            raise typer.Exit(2)
        typer.echo(reference("markdown" if fmt == "markdown" else "dotenv"), nl=False)
