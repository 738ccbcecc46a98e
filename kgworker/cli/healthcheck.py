"""``kgworker healthcheck``: does this host's node answer ``/healthz`` where it listens?

The container's HEALTHCHECK. It asks the address the node recorded when its endpoint
started (:mod:`kgworker.observe.endpoint_file`), so ``--api-port``, a ``--config`` file or
port 0 cannot send it to the wrong port. Exit 0 healthy, 1 not, and 0 when the endpoint is
turned off by configuration (there is nothing to ask). Never 2: Docker reserves it.

Only ``KG_API_ENABLED`` and ``KG_API_STATE_FILE`` are read (environment > ``--config`` >
``.env``, as the node layers them), without validating the rest: a node configured by a
file this check is not given still passes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from dotenv import dotenv_values
from pydantic import TypeAdapter, ValidationError

HEALTHY, UNHEALTHY = 0, 1
Layer = Mapping[str, str | None]


def _layers(config: Path | None) -> list[Layer]:
    """The sources of the two settings, highest first."""
    layers: list[Layer] = [os.environ]
    if config is not None and config.is_file():
        layers.append(dotenv_values(config))
    if Path(".env").is_file():
        layers.append(dotenv_values(".env"))
    return layers


def _value(name: str, layers: list[Layer]) -> str | None:
    for layer in layers:
        for key, value in layer.items():
            if value is not None and key.upper() == name:
                return value
    return None


def _enabled(raw: str | None) -> bool:
    if raw is None:
        return True
    try:
        return TypeAdapter(bool).validate_python(raw)
    except ValidationError:  # the node refuses such a value, so it is not serving either
        return True


def check(config: Path | None, timeout: float) -> tuple[int, str]:
    """``(exit code, one line)`` for the node configured by these sources."""
    from kgworker.observe.endpoint_file import probe_url, read_endpoint, state_path

    layers = _layers(config)
    if not _enabled(_value("KG_API_ENABLED", layers)):
        return HEALTHY, "HTTP endpoint turned off (KG_API_ENABLED): nothing to check"
    configured = (_value("KG_API_STATE_FILE", layers) or "").strip()
    path = state_path(Path(configured) if configured else None)
    recorded = read_endpoint(path)
    if recorded is None:
        return UNHEALTHY, f"no endpoint recorded in {path}: the node is not serving (yet)"
    url = probe_url(*recorded)
    import urllib.request  # here: the other commands (``kgworker run``) need no HTTP client

    try:
        # the URL is built here from a recorded host:port, always http://
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            body = json.loads(response.read())
    except (OSError, ValueError) as exc:  # refused, timeout, HTTP error, not JSON
        return UNHEALTHY, f"{url}: {getattr(exc, 'reason', None) or exc}"
    if not isinstance(body, dict) or body.get("status") != "ok":
        return UNHEALTHY, f"{url}: unexpected answer {body!r:.200}"
    return HEALTHY, f"{url}: ok"


def register(app: typer.Typer) -> None:
    @app.command()
    def healthcheck(
        timeout: Annotated[
            float, typer.Option("--timeout", min=0.1, help="Seconds to wait for /healthz.")
        ] = 4.0,
        config: Annotated[
            Path | None, typer.Option("--config", help="Settings file (dotenv syntax).")
        ] = None,
    ) -> None:
        """Exit 0 when this host's node answers /healthz where it listens (image HEALTHCHECK)."""
        from kgworker.cli import STATE

        code, message = check(config or STATE.config_file, timeout)
        typer.echo(message, err=code != HEALTHY)
        raise typer.Exit(code)
