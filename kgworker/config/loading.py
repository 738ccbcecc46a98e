"""Layering the sources and reporting on the result.

Sources, highest first: command-line flags > environment > ``--config FILE`` (dotenv
syntax) > ``.env`` in the working directory > defaults. :func:`load_settings` applies that
order and remembers where each value came from, which ``kgworker config show`` prints.
Problems are collected into one :class:`ConfigError`, one line per variable, so the CLI can
exit 2 without a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from kgworker.config.redact import redact_url
from kgworker.config.settings import (
    ENV_ALIASES,
    SOURCE_CLI,
    SOURCE_CONFIG_FILE,
    SOURCE_DEFAULT,
    SOURCE_DOTENV,
    SOURCE_ENV,
    ConfigError,
    Settings,
)


class _LayeredSettings(Settings):
    """Settings built only from the values :func:`load_settings` already merged."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def env_name(field: str) -> str:
    return field.upper()


def _from_variables(variables: Mapping[str, str | None]) -> dict[str, str]:
    """Map variable names (any case, aliases included) to field names."""
    fields = Settings.model_fields
    found: dict[str, str] = {}
    aliased: dict[str, str] = {}
    for key, value in variables.items():
        if value is None:
            continue
        name = key.lower()
        if name in fields:
            found[name] = value
        elif key.upper() in ENV_ALIASES:
            aliased[ENV_ALIASES[key.upper()]] = value
    return {**aliased, **found}


def _merge(
    overrides: Mapping[str, Any] | None,
    config_file: Path | str | None,
    environ: Mapping[str, str] | None,
    dotenv_path: Path | str | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every source merged in precedence order: ``(values by field, source by field)``."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if dotenv_path is not None and Path(dotenv_path).is_file():
        layers.append((SOURCE_DOTENV, _from_variables(dotenv_values(dotenv_path))))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError([f"--config: file not found: {path}"])
        layers.append((f"{SOURCE_CONFIG_FILE} {path}", _from_variables(dotenv_values(path))))
    layers.append((SOURCE_ENV, _from_variables(os.environ if environ is None else environ)))
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(cli) - set(Settings.model_fields))
    if unknown:
        raise ConfigError([f"unknown setting {name!r}" for name in unknown])
    layers.append((SOURCE_CLI, cli))

    merged: dict[str, Any] = {}
    sources = dict.fromkeys(Settings.model_fields, SOURCE_DEFAULT)
    for source, values in layers:
        merged.update(values)
        sources.update(dict.fromkeys(values, source))
    return merged, sources


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | str | None = ".env",
) -> Settings:
    """Merge every source in precedence order and validate once.

    ``overrides`` are command-line values keyed by field name; ``None`` values are ignored
    so a CLI can pass every flag it has. Raises :class:`ConfigError` listing every problem.
    """
    merged, sources = _merge(overrides, config_file, environ, dotenv_path)
    try:
        settings: Settings = _LayeredSettings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, merged)) from None
    settings._sources = sources
    return settings


def describe_unvalidated(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | str | None = ".env",
) -> list[tuple[str, str, str]]:
    """The rows of :func:`describe_settings` for sources that do not validate: each value
    as given (secrets redacted), defaults for the rest — so ``config show`` can still show
    what is in effect next to the problems. Raises :class:`ConfigError` only when the
    sources themselves cannot be read (a missing ``--config`` file)."""
    merged, sources = _merge(overrides, config_file, environ, dotenv_path)
    rows: list[tuple[str, str, str]] = []
    for field, info in Settings.model_fields.items():
        if field not in merged:
            shown = "" if "SecretStr" in str(info.annotation) else default_text(field)
        else:
            shown = _shown(field, merged[field])
        rows.append((env_name(field), shown, sources.get(field, SOURCE_DEFAULT)))
    return rows


def _shown(field: str, value: Any) -> str:
    """A raw (unvalidated) value for display, secrets redacted as describe_settings does."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    if "SecretStr" in str(Settings.model_fields[field].annotation):
        return redact_url(text) if field.endswith("_url") else ("********" if text else "")
    return text


def _describe(exc: ValidationError, merged: Mapping[str, Any]) -> list[str]:
    """One line per problem: ``VARIABLE: what is wrong (got 'value')``."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:
            lines.append(message)
            continue
        field = str(error["loc"][0])
        line = f"{env_name(field)}: {message}"
        annotation = str(Settings.model_fields[field].annotation) if field in \
            Settings.model_fields else ""
        secret = ("password" in field or "token" in field or field.endswith("_url")
                  or "SecretStr" in annotation)
        if field in merged and not secret and repr(merged[field]) not in message:
            line += f" (got {merged[field]!r})"
        lines.append(line)
    return lines


def describe_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """``(VARIABLE, display value, source)`` rows with every secret redacted."""
    rows: list[tuple[str, str, str]] = []
    sources = settings.sources
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if isinstance(value, SecretStr) and field.endswith("_url"):
            shown = redact_url(value.get_secret_value())
        elif isinstance(value, SecretStr):
            shown = "********" if value.get_secret_value() else ""
        elif isinstance(value, list):
            shown = ",".join(value)
        elif value is None:
            shown = ""
        else:
            shown = str(value)
        rows.append((env_name(field), shown, sources.get(field, SOURCE_DEFAULT)))
    return rows


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Render settings as environment variables, e.g. for a worker subprocess.

    Secrets are written in clear: the result is meant for a child's environment only.
    """
    env: dict[str, str] = {}
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[env_name(field)] = str(value)
    return env


def default_text(field: str) -> str:
    """A setting's default as the reference prints it (empty for none)."""
    value = Settings.model_fields[field].get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def reference(fmt: Literal["markdown", "dotenv"]) -> str:
    """Every variable with its default and meaning, as a README table or a .env example."""
    lines: list[str] = []
    if fmt == "markdown":
        lines += ["| variable | default | meaning |", "|---|---|---|"]
    for field, info in Settings.model_fields.items():
        default = default_text(field)
        if fmt == "markdown":
            shown = f"`{default}`" if default else "—"
            lines.append(f"| `{env_name(field)}` | {shown} | {info.description} |")
        else:
            lines += [f"# {info.description}", f"# {env_name(field)}={default}", ""]
    return "\n".join(lines).rstrip() + "\n"
