"""``kgworker config show``: the effective settings and where each came from."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kgworker.config import (
    ConfigError,
    describe_settings,
    describe_unvalidated,
    load_settings,
    reference,
)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def show(
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Print every setting, its value (secrets redacted) and its source.

        With invalid or missing values (no DB_HOST yet) it still prints what is in effect,
        then one line per problem, and exits 2.
        """
        from kgworker.cli import STATE, print_problems

        problems: ConfigError | None = None
        try:
            rows = describe_settings(load_settings(config_file=STATE.config_file))
        except ConfigError as exc:
            problems = exc
            try:
                rows = describe_unvalidated(config_file=STATE.config_file)
            except ConfigError as unreadable:  # the sources themselves: nothing to show
                print_problems(unreadable)
                raise typer.Exit(2) from None
        _print_rows(rows, as_json)
        if problems is not None:
            print_problems(problems)
            raise typer.Exit(2)

    def _print_rows(rows: list[tuple[str, str, str]], as_json: bool) -> None:
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
