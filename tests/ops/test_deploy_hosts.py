"""The kit outside containers: systemd, supervisor and Kaggle.

The units start exactly when the worker would and do not restart on a configuration
error (exit 2).
"""

from __future__ import annotations

import ast
import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from .test_deploy import DEPLOY, GRACE, ROOT


def ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_unit() -> None:
    """The unit starts exactly when the worker would, and a config error does not loop."""
    unit = ini(DEPLOY / "systemd" / "kgworker.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("kgworker run")
    # no pre-check: `kgworker doctor` fails while Neo4j is down, `run` waits for it
    assert "ExecStartPre" not in service and "ExecCondition" not in service
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == ["2"], "exit 2 = bad configuration"
    assert int(service["TimeoutStopSec"]) > GRACE
    assert service["KillSignal"] == "SIGTERM" and service["User"] != "root"
    assert "Install" in unit and "Unit" in unit
    # [Unit] options; under [Service] StartLimitIntervalSec is an unknown, ignored key
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= set(unit["Unit"])
    assert not {"StartLimitIntervalSec", "StartLimitBurst"} & set(service)


def test_systemd_documentation_exists() -> None:
    """Documentation= names what the unit's own instructions install (no package index)."""
    text = (DEPLOY / "systemd" / "kgworker.service").read_text()
    links = ini(DEPLOY / "systemd" / "kgworker.service")["Unit"]["Documentation"].split()
    assert links
    for link in links:
        assert re.match(r"^(https?://|file:/|man:|info:)", link), link
        assert "pypi.org" not in link, "kgworker is not published"
        if link.startswith("file:"):
            assert re.search(rf"^#.*install .*README\.md {re.escape(link[5:])}\s", text, re.M)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    """systemd's own parser: no unknown key, section or value (the binary is stubbed)."""
    text = (DEPLOY / "systemd" / "kgworker.service").read_text()
    unit = tmp_path / "kgworker.service"
    unit.write_text(text.replace("/opt/kgworker/venv/bin/kgworker", shutil.which("true") or ""))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and not result.stdout + result.stderr, result.stderr


def test_supervisor_program() -> None:
    program = ini(DEPLOY / "supervisor" / "kgworker.conf")["program:kgworker"]
    assert program["command"].split()[-1] == "run"
    assert int(program["stopwaitsecs"]) > GRACE
    assert program["stopsignal"] == "TERM" and program["numprocs"] == "1"
    # exit 2 (bad configuration) is "expected", so autorestart=unexpected leaves it stopped
    assert program["autorestart"] == "unexpected"
    assert set(program["exitcodes"].split(",")) == {"0", "2"}


def test_kaggle_notebook() -> None:
    path = DEPLOY / "kaggle" / "kgworker-kaggle.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    joined = "\n".join(code)
    assert "pip install" in joined and "run_worker(" in joined and "os.environ" in joined
    for source in code:  # valid Python once the shell escapes are taken out
        python = "\n".join(line for line in source.splitlines() if not line.startswith("!"))
        compile(python, "cell", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "kaggle" / "make_notebook.py")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert nbformat.read(path, as_version=4) == notebook, "notebook matches its generator"
