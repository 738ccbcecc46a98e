"""The pinned constraints CI tested, and the runtime requirements the image installs.

    .venv/bin/python scripts/constraints.py freeze     # rewrite constraints.txt
    python scripts/constraints.py runtime               # pyproject's runtime requirements

``freeze`` runs in the environment the tests passed in (``./scripts/test`` builds it): it
walks the requirements of ``pyproject.toml`` (runtime and the ``test`` extra) through the
installed distributions and pins every one it reaches, so the file holds exactly what the
tests ran with, never kgworker itself nor stray packages of that environment. ``runtime``
needs only the standard library: the Dockerfile runs it before the code is copied, to
install the dependency layer from ``pyproject.toml`` and the pins alone.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "kgworker"
EXTRAS = ("test",)
HEADER = """\
# Versions the test suite passed with: runtime dependencies and the test extra.
# Used as `pip install -c constraints.txt ...` by scripts/test and the Dockerfile.
# Regenerate in the tested environment: .venv/bin/python scripts/constraints.py freeze
"""


def project(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Any]:
    with pyproject.open("rb") as handle:
        table: dict[str, Any] = tomllib.load(handle)["project"]
    return table


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """``[project] dependencies`` as written (markers included)."""
    return list(project(pyproject)["dependencies"])


def root_requirements(pyproject: Path, extras: tuple[str, ...]) -> list[str]:
    """Runtime requirements plus those of ``extras``, self-references (kgworker[x]) expanded."""
    table = project(pyproject)
    optional: dict[str, list[str]] = table.get("optional-dependencies", {})
    found = list(table["dependencies"])
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional.get(extra, []):
            name, _, rest = line.partition("[")
            if name.strip().lower() == PROJECT:
                pending += [e.strip() for e in rest.split("]", 1)[0].split(",")]
            else:
                found.append(line)
    return found


def freeze(pyproject: Path, extras: tuple[str, ...]) -> dict[str, str]:
    """``{distribution name: version}`` of everything the requirements reach here.

    Fails (SystemExit) when a requirement is missing or installed at a version outside its
    specifier: such an environment is not the one the tests should have run in.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, str]] = {}
    expanded: set[tuple[str, frozenset[str]]] = set()
    queue: list[tuple[Requirement, tuple[str, ...]]] = [
        (Requirement(line), ("",)) for line in root_requirements(pyproject, extras)
    ]
    problems: list[str] = []
    while queue:
        requirement, parent_extras = queue.pop()
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in parent_extras):
            continue
        key = canonicalize_name(requirement.name)
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            problems.append(f"{requirement}: not installed")
            continue
        version = dist.version
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: {version} is installed")
        pins[key] = (dist.metadata["Name"], version)
        if (key, frozenset(requirement.extras)) not in expanded:
            expanded.add((key, frozenset(requirement.extras)))
            wanted = ("", *sorted(requirement.extras))
            queue += [(Requirement(line), wanted) for line in dist.requires or []]
    if problems:
        raise SystemExit("cannot freeze this environment:\n  " + "\n  ".join(problems))
    pins.pop(PROJECT, None)
    return {name: version for name, version in sorted(pins.values(), key=lambda p: p[0].lower())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("freeze", help="pin the tested environment")
    write.add_argument("--output", type=Path, default=ROOT / "constraints.txt")
    write.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    show = commands.add_parser("runtime", help="print the runtime requirements")
    show.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)
    if args.command == "runtime":
        print("\n".join(runtime_requirements(args.pyproject)))
        return 0
    pins = freeze(args.pyproject, EXTRAS)
    text = HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())
    args.output.write_text(text, encoding="utf-8")
    print(f"{args.output.name}: {len(pins)} pins", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
