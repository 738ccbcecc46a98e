"""The ``kgworker`` command line: one module per command group, each with ``register(app)``.

Configuration problems are reported here, once, as one line per variable and exit code 2;
nothing below the CLI prints or exits on its own. Exit codes: 0 done, 1 refused or failed
(a wrong id, a store that cannot be reached), 2 a usage or configuration error (click's
convention: a wrong flag, a missing argument, a bad value).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kgworker.cli.help import flags_take_no_value
from kgworker.config import ConfigError, Settings, load_settings
from kgworker.domain import clock
from kgworker.version import __version__

#: Command modules under ``kgworker.cli``; each exposes ``register(app: typer.Typer)``.
COMMAND_MODULES = (
    "config_cmd", "doctor", "db", "run", "status", "control", "eval", "demo", "healthcheck",
)
PROG = "kgworker"


flags_take_no_value()

app = typer.Typer(
    name=PROG,
    help="Distributed knowledge-graph worker for chaishu-style novel analysis.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class CliState:
    """Options given before the command, shared by every command."""

    config_file: Path | None = None


STATE = CliState()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file in dotenv syntax (below env, above .env)."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kgworker {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    STATE.config_file = config


def settings_or_exit(
    overrides: dict[str, Any] | None = None, config: Path | None = None
) -> Settings:
    """Load settings for a command; on problems print one line each and exit 2."""
    try:
        settings = load_settings(overrides, config_file=config or STATE.config_file)
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(2) from None
    clock.configure(settings.kg_chaishu_utc_offset)
    return settings


def print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        typer.echo(f"config error: {problem}", err=True)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"kgworker.cli.{name}")
        module.register(app)


_register_commands()


def main() -> None:
    """Console entry point (``python -m kgworker`` too: the same name in usage lines)."""
    sys.exit(app(prog_name=PROG))
