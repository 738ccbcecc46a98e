"""Every configuration variable with a wrong value: the CLI exits 2 with one line naming the
variable, and never shows a traceback.

The wrong value is picked per field from its type: the first candidate that validation
refuses (a word for numbers and booleans, an unknown choice for ``Literal``s, a negative or
huge number for bounded ones, broken JSON for JSON settings). Fields that take any string
(host names, passwords, paths...) have no wrong value and are listed, not tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgworker.cli import app
from kgworker.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
BASE = {"DB_HOST": "127.0.0.1"}
CANDIDATES = ("not-a-value", "maybe", "-5", "1e999", "99999999999", "", "0", "[", "{bad json")


def wrong_value(name: str) -> str | None:
    """A value of variable ``name`` that loading refuses (naming it), or None."""
    for value in CANDIDATES:
        try:
            load_settings(environ={**BASE, name: value}, dotenv_path=None)
        except ConfigError as exc:
            if any(name in problem for problem in exc.problems):
                return value
        except Exception as exc:  # anything but ConfigError is itself a bug
            raise AssertionError(f"{name}={value!r}: {type(exc).__name__}: {exc}") from exc
    return None


VARIABLES = sorted(name.upper() for name in Settings.model_fields)
WRONG = {name: wrong_value(name) for name in VARIABLES}
CHECKED = sorted(name for name, value in WRONG.items() if value is not None)
FREE_FORM = sorted(name for name, value in WRONG.items() if value is None)


def test_most_variables_have_a_wrong_value() -> None:
    # numbers, booleans, choices, bounded values, JSON: the typed ones are most of them
    assert len(CHECKED) >= 60, CHECKED
    assert len(FREE_FORM) < len(CHECKED), FREE_FORM


@pytest.mark.parametrize("name", CHECKED)
def test_wrong_value_exits_2_naming_the_variable(name: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {key: None for key in os.environ
           if key.startswith(("REDIS_", "DB_", "NEO4J_", "KG_", "DATABASE_", "LOG_"))}
    env.update({**BASE, name: WRONG[name] or ""})
    cwd = os.getcwd()
    os.chdir(tmp_path)  # no stray .env
    try:
        result = runner.invoke(app, ["config", "show"], env=env)  # type: ignore[arg-type]
    finally:
        os.chdir(cwd)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, (name, WRONG[name], output)
    assert name in output, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)


@pytest.mark.parametrize("name", ["KG_LEASE_SECONDS", "REDIS_PORT", "KG_LLM_MODE",
                                  "KG_API_ENABLED", "KG_WORKERS_PER_PROVIDER",
                                  # these three were parsed only at start: a traceback, exit 1
                                  "KG_LLM_PROVIDERS", "KG_PROVIDER_LIMITS", "KG_LLM_PRICES"])
def test_real_process_exits_2_without_traceback(name: str, tmp_path: Path) -> None:
    """The same through a real ``kgworker run`` process (spot checks: a subprocess each)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "DB_", "NEO4J_", "KG_", "DATABASE_", "LOG_"))}
    env.update({**BASE, name: WRONG[name] or "", "PYTHONPATH": str(ROOT)})
    proc = subprocess.run([sys.executable, "-m", "kgworker", "run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert name in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
