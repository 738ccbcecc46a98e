"""The chaos suite's servers (dedicated, see ``servers.py``) and the opt-in for the full run.

The full run (``@pytest.mark.chaos``) is skipped unless ``-m chaos`` selects it or
``KG_CHAOS_FULL=1`` is set; ``make chaos`` does the former. The reduced run always runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.run import Stores
from tests.chaos.servers import (
    MariaDBServer,
    Neo4jServer,
    RedisServer,
    mariadb_available,
    neo4j_available,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = "chaos" in (config.getoption("-m") or "") or os.environ.get("KG_CHAOS_FULL") == "1"
    if wanted:
        return
    skip = pytest.mark.skip(reason="full chaos run: `make chaos` (or -m chaos)")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    """Redis (AOF, fsync always), MariaDB and Neo4j of this test only, on free ports."""
    if not neo4j_available():
        pytest.skip("Neo4j jars not built: run scripts/services up")
    if not mariadb_available():
        pytest.skip("mariadbd not installed: run scripts/services up")
    with RedisServer(tmp_path / "redis") as redis, MariaDBServer(tmp_path / "mariadb") as db, \
            Neo4jServer(tmp_path / "neo4j") as neo4j:
        yield Stores(redis, db, neo4j)  # type: ignore[arg-type]
