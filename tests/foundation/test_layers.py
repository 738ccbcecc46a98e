"""The package's import graph: no module imports itself back, layers point down only.

``lint-imports`` (scripts/test) checks the layers contract of pyproject.toml; this test
adds what a layers contract cannot see: a cycle between two modules of one package.
"""

from __future__ import annotations

import grimp

LOW = ("kgworker.runtime", "kgworker.queue", "kgworker.store", "kgworker.domain")
HIGH = ("kgworker.chaishu", "kgworker.cli", "kgworker.api")


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph("kgworker")
    cycles = sorted({
        tuple(sorted((module, imported)))
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    })
    assert cycles == []


def test_runtime_store_and_domain_never_reach_the_application() -> None:
    graph = grimp.build_graph("kgworker")
    reached = [
        (low, high)
        for low in LOW
        for high in HIGH
        if graph.chain_exists(importer=low, imported=high, as_packages=True)
    ]
    assert reached == []
