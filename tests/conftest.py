"""Fixtures on the real stores, each test isolated from the others.

Servers come from the environment (REDIS_*, DB_*, NEO4J_*) when the user exports them,
otherwise from ``scripts/services env`` (the project's own loopback servers). Isolation:
a Redis database number per test (flushed first), a fresh MySQL database per test, and a
unique ``novel_id`` whose graph nodes are deleted afterwards.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from neo4j import AsyncDriver
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings, load_settings, settings_to_env
from kgworker.keys import spec_for
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.store.graph import create_driver
from kgworker.store.mysql import create_engine

ROOT = Path(__file__).resolve().parents[1]
STORE_VARIABLES = ("REDIS_HOST", "DB_HOST", "NEO4J_URI")
_redis_dbs = itertools.cycle(range(1, 16))
#: Marks a Redis database as taken by a running test (the only key a fresh test DB holds).
_DB_LOCK = "kgtest:db-lock"
#: How a Redis key of ours or of chaishu's starts (tests use other prefixes for their own).
KEY_START = re.compile(r"^\{?(kg:|kgw:|ai:provider:)")


def _services_env() -> dict[str, str]:
    """Variables from the user's environment, else from the project's service script."""
    if all(os.environ.get(name) for name in STORE_VARIABLES):
        return dict(os.environ)
    result = subprocess.run(
        [str(ROOT / "scripts" / "services"), "env"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.exit(f"no store servers: run scripts/services up ({result.stderr.strip()})", 2)
    env = dict(os.environ)
    for line in result.stdout.splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line:
            key, _, value = line.partition("=")
            parsed = shlex.split(value)
            env[key] = parsed[0] if parsed else ""
    return env


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings pointing at the test servers, with no .env file involved.

    The HTTP endpoint binds an ephemeral port, so several nodes can run side by side.
    """
    return load_settings({"kg_api_port": 0}, environ=_services_env(), dotenv_path=None)


def _undocumented_keys(client: Any) -> list[str]:
    """Keys of ours (or chaishu's) left in a test database that docs/redis-keys.md lacks."""
    found = (key.decode("utf-8", "replace") for key in client.scan_iter(count=1000))
    return sorted(k for k in found if KEY_START.match(k) and spec_for(k) is None)


@pytest.fixture
def redis_db(base_settings: Settings) -> Iterator[int]:
    """A Redis database number no other running test holds (even in another pytest run)."""
    if base_settings.redis_is_cluster:
        yield 0
        return
    import redis as sync_redis

    token = uuid.uuid4().hex
    for _ in range(15 * 20):
        db = next(_redis_dbs)
        client = sync_redis.Redis(
            host=base_settings.redis_host,
            port=base_settings.redis_port,
            password=base_settings.redis_password.get_secret_value() or None,
            db=db,
        )
        if client.set(_DB_LOCK, token, nx=True, ex=900):
            client.flushdb()
            client.set(_DB_LOCK, token, ex=900)
            try:
                yield db
                undocumented = _undocumented_keys(client)
            finally:
                if client.get(_DB_LOCK) == token.encode():
                    client.delete(_DB_LOCK)
                client.close()
            assert undocumented == [], (
                f"Redis keys no row of kgworker.keys.KEY_SPECS describes: {undocumented[:10]}"
            )
            return
        client.close()
    pytest.fail("every Redis test database is held by another test")


@pytest.fixture
async def mysql_database(base_settings: Settings) -> AsyncIterator[str]:
    """A fresh, empty MySQL database for one test, dropped afterwards."""
    name = f"kgt_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base_settings, database="", pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        yield name
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await engine.dispose()


@pytest.fixture
def settings(base_settings: Settings, redis_db: int, mysql_database: str) -> Settings:
    """Settings isolated for one test: own Redis DB, own MySQL database."""
    parts = base_settings.mysql_parts()
    return base_settings.model_copy(
        update={
            "redis_db": redis_db,
            "database_url": None,
            "db_host": parts.host,
            "db_port": parts.port,
            "db_user": parts.user,
            "db_password": SecretStr(parts.password),
            "db_name": mysql_database,
        }
    )


@pytest.fixture
def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a worker subprocess that sees the same isolated stores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DB_", "NEO4J_"))}
    env.update(settings_to_env(settings))
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    client = create_redis(settings)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def mysql_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def neo4j_driver(base_settings: Settings) -> AsyncIterator[AsyncDriver]:
    driver = create_driver(base_settings)
    try:
        yield driver
    finally:
        await driver.close()


@pytest.fixture
async def novel_id(neo4j_driver: AsyncDriver) -> AsyncIterator[int]:
    """A novel id no other test uses; its graph is removed afterwards."""
    value = random.randrange(10**9, 2 * 10**9)
    yield value
    await neo4j_driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id) DETACH DELETE n", id=value
    )


@pytest.fixture
def tmp_cwd(tmp_path: Path) -> Iterator[Path]:
    """Run a test in an empty working directory (no stray .env)."""
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
