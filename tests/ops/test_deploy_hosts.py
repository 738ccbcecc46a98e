"""The kit outside containers: systemd, supervisor, Kaggle, and how each example installs.

kgworker is not on a package index, so every example installs what it documents: a wheel
built from a checkout (``python -m pip wheel --no-deps -w dist .``) with the tested pins,
or an image built from the repository. The units start exactly when the worker would and
do not restart on a configuration error (exit 2).
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


def install_cell() -> str:
    notebook = nbformat.read(DEPLOY / "kaggle" / "kgworker-kaggle.ipynb", as_version=4)
    [cell] = [c.source for c in notebook.cells
              if c.cell_type == "code" and "pip install" in c.source]
    return str(cell)


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


def test_kaggle_installs_the_attached_wheel() -> None:
    """The install cell runs pip on a wheel under /kaggle/input, with the tested pins."""
    [command] = [line for line in install_cell().splitlines() if line.startswith("!pip")]
    args = command.removeprefix("!").split()
    assert args[:2] == ["pip", "install"]
    targets = [a for a in args[2:] if not a.startswith("-")]
    wheel = [t for t in targets if t.endswith(".whl")]
    assert wheel and all(t.startswith("/kaggle/input/") for t in targets), targets
    assert "-c" in args and args[args.index("-c") + 1].endswith("/constraints.txt")
    assert WHEEL_COMMAND in install_cell(), "says how the wheel is built"


#: ``pip install kgworker`` as if it were on a package index (a wheel or path is fine).
BARE_INSTALL = re.compile(r"pip3? install(?: -\S+)*(?: -c \S+)* kgworker(?![\w.*/\[-])")
WHEEL_COMMAND = "pip wheel --no-deps -w dist ."
#: Each deployment example and what in it says how kgworker gets installed.
INSTALL_NOTES = {
    "systemd/kgworker.service": (WHEEL_COMMAND, "-c constraints.txt dist/kgworker-*.whl"),
    "supervisor/kgworker.conf": (WHEEL_COMMAND, "-c constraints.txt dist/kgworker-*.whl"),
    "kaggle/make_notebook.py": (WHEEL_COMMAND, "/kaggle/input/kgworker/kgworker-*.whl"),
    "kaggle/kgworker-kaggle.ipynb": (WHEEL_COMMAND, "/kaggle/input/kgworker/kgworker-*.whl"),
    "docker-compose.yml": ("built from this checkout", "context: ../.."),
    "kubernetes/deployment.yaml": ("docker build", "not on a package index"),
}


def test_bare_install_pattern() -> None:
    assert BARE_INSTALL.search("pip install kgworker")
    assert BARE_INSTALL.search("!pip install -q kgworker\n")
    assert BARE_INSTALL.search("&& pip install kgworker)")
    for fine in ("pip install kgworker-0.1.0-py3-none-any.whl", "pip install kgworker[test]",
                 "pip install -c constraints.txt dist/kgworker-*.whl", "pip install ."):
        assert not BARE_INSTALL.search(fine), fine


@pytest.mark.parametrize("path", [*sorted(p for p in DEPLOY.rglob("*") if p.is_file()),
                                  ROOT / "README.md", ROOT / "Dockerfile"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_example_installs_from_a_package_index(path: Path) -> None:
    assert not BARE_INSTALL.search(path.read_text()), "kgworker is not on a package index"


@pytest.mark.parametrize("name", sorted(INSTALL_NOTES))
def test_every_example_says_how_kgworker_is_installed(name: str) -> None:
    text = (DEPLOY / name).read_text()
    for note in INSTALL_NOTES[name]:
        assert note in text, f"{name} does not say {note!r}"
