"""Dependency bounds and the constraints file: installs stay on the versions CI tested.

Every runtime dependency has an upper bound (a new major version must be tried first), and
``constraints.txt`` pins every runtime and test requirement at versions inside those
bounds; ``scripts/test`` and the Dockerfile install with it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"


def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        table: dict[str, object] = tomllib.load(handle)["project"]
    return table


def runtime() -> list[Requirement]:
    deps = project()["dependencies"]
    assert isinstance(deps, list)
    return [Requirement(line) for line in deps]


def extra_requirements() -> list[Requirement]:
    optional = project()["optional-dependencies"]
    assert isinstance(optional, dict)
    return [Requirement(line) for line in optional["test"]]


def pins(path: Path = CONSTRAINTS) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints are exact pins: {line!r}"
        found[canonicalize_name(name)] = Version(version)
    return found


@pytest.mark.parametrize("requirement", runtime(), ids=lambda r: r.name)
def test_runtime_dependency_has_an_upper_bound(requirement: Requirement) -> None:
    uppers = [s for s in requirement.specifier if s.operator in ("<", "<=", "==", "~=")]
    assert uppers, f"{requirement}: no upper bound"
    lowers = [s for s in requirement.specifier if s.operator in (">=", ">")]
    for upper in uppers:  # below the next major version of the lower bound's line
        bound = Version(upper.version)
        assert (bound.minor == 0 and bound.micro == 0) or upper.operator in ("==", "~="), upper
        for lower in lowers:
            assert Version(lower.version) < bound, requirement


def test_constraints_pin_every_requirement_inside_its_bounds() -> None:
    pinned = pins()
    assert "kgworker" not in pinned, "the project itself is never constrained"
    for requirement in [*runtime(), *extra_requirements()]:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in constraints.txt"
        version = pinned[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement.name}=={version} is outside {requirement.specifier}"
        )
    assert canonicalize_name("hiredis") in pinned, "extras of requirements are pinned too"


def freeze(tmp_path: Path, pyproject: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(ROOT / "scripts" / "constraints.py"), "freeze",
            "--output", str(tmp_path / "constraints.txt")]
    if pyproject is not None:
        args += ["--pyproject", str(pyproject)]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def test_freeze_script_pins_the_tested_environment(tmp_path: Path) -> None:
    """The documented generator pins every requirement this environment has, not itself."""
    result = freeze(tmp_path)
    assert result.returncode == 0, result.stderr
    fresh = pins(tmp_path / "constraints.txt")
    assert "kgworker" not in fresh
    wanted = {canonicalize_name(r.name) for r in [*runtime(), *extra_requirements()]}
    assert wanted <= set(fresh), wanted - set(fresh)
    assert canonicalize_name("pydantic-core") in fresh, "dependencies of dependencies too"


@pytest.mark.parametrize(
    ("dependency", "reason"),
    [("kgworker-no-such-package>=1", "not installed"), ("pytest<1", "is installed")],
)
def test_freeze_refuses_an_environment_that_does_not_match(
    tmp_path: Path, dependency: str, reason: str
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\nname = "x"\ndependencies = ["{dependency}"]\n')
    result = freeze(tmp_path, pyproject)
    assert result.returncode != 0 and reason in result.stderr, result.stderr
    assert not (tmp_path / "constraints.txt").exists()


def test_installs_use_the_constraints() -> None:
    install = [line for line in (ROOT / "scripts" / "test").read_text().splitlines()
               if "pip install" in line and ".[test]" in line]
    assert install and all("-c constraints.txt" in line for line in install)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "constraints.txt" not in ignored and "scripts" not in ignored


def test_runtime_command_prints_the_dependencies() -> None:
    """What the Dockerfile's dependency layer installs is pyproject's runtime list."""
    result = subprocess.run(
        [sys.executable, "-I", str(ROOT / "scripts" / "constraints.py"), "runtime"],
        capture_output=True, text=True, check=True,
    )
    assert [Requirement(line) for line in result.stdout.splitlines()] == runtime()
