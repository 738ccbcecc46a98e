"""The built wheel, not the checkout: what ``pip install .`` gives a new operator.

The wheel is built here (``pip wheel --no-deps``) and installed with ``--no-deps
--no-index`` into a fresh virtualenv; its dependencies come from the interpreter running
the tests through a ``.pth`` line, which sys.path puts *after* the venv's own
site-packages, so the installed kgworker is the one imported. No package index is needed
once pip has the build backend.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from kgworker.eval.quality import SUITES

ROOT = Path(__file__).resolve().parents[2]
_OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
            "No matching distribution found", "Could not find a version", "ProxyError")


def _env() -> dict[str, str]:
    """No PYTHONPATH (it would put the checkout first) and no store variables."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "REDIS_", "DB_", "NEO4J_", "DATABASE_URL")
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the wheel of this checkout installed; its ``bin`` directory."""
    base = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"),
         str(ROOT)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    if built.returncode != 0 and any(marker in built.stderr for marker in _OFFLINE):
        pytest.skip(f"pip cannot fetch the build backend: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (base / "dist").glob("kgworker-*.whl")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=_env(), capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(purelib) / "zz_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8"
    )
    return env_dir / "bin"


def test_eval_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed / "kgworker"), "eval"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for suite in SUITES:
        block = done.stdout.split(f"[{suite}] ")[1].split("\n[")[0]
        assert block.startswith("PASS"), block[:300]
        assert re.search(r"entities +P=\d\.\d{4} R=\d\.\d{4} F1=\d\.\d{4}", block), block[:300]
    assert list(tmp_path.iterdir()) == [], "eval writes nothing into the working directory"
    where = subprocess.run(
        [str(installed / "python"), "-c",
         "import kgworker, kgworker.eval.gold as g; print(kgworker.__file__); "
         "print(g.default_novel_dir())"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True,
    ).stdout.split()
    env_dir = installed.parent.resolve()
    assert all(Path(p).resolve().is_relative_to(env_dir) for p in where), where
