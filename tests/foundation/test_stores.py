"""Round trips through kgworker's own configured clients on the real servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

from neo4j import AsyncDriver
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings, settings_to_env
from kgworker.observe.health import check_stores
from kgworker.queue.connection import RedisClient


async def test_redis_round_trip_json_hash(redis: RedisClient) -> None:
    """chaishu JSON-encodes every hash field; what we write reads back the same."""
    key = f"kg:nodes:test-{uuid.uuid4().hex[:8]}"
    await redis.hset(key, mapping={"node_type": '"worker"', "pid": "42"})
    await redis.expire(key, 30)
    assert await redis.hgetall(key) == {b"node_type": b'"worker"', b"pid": b"42"}
    assert 0 < await redis.ttl(key) <= 30


async def test_redis_databases_isolate_tests(redis: RedisClient, settings: Settings) -> None:
    assert settings.redis_db != 0 or settings.redis_is_cluster
    assert await redis.keys("*") == [b"kgtest:db-lock"]


async def test_mysql_round_trip_utf8mb4(mysql_engine: AsyncEngine, settings: Settings) -> None:
    async with mysql_engine.begin() as conn:
        name = (await conn.execute(text("SELECT DATABASE()"))).scalar_one()
        assert name == settings.db_name
        await conn.execute(
            text("CREATE TABLE t (id INT PRIMARY KEY, title VARCHAR(50)) CHARACTER SET utf8mb4")
        )
        await conn.execute(text("INSERT INTO t VALUES (1, :title)"), {"title": "拆书 📚"})
    async with mysql_engine.connect() as conn:
        assert (await conn.execute(text("SELECT title FROM t"))).scalar_one() == "拆书 📚"


async def test_neo4j_merge_and_read_back(neo4j_driver: AsyncDriver, novel_id: int) -> None:
    for _ in range(2):  # MERGE twice: still one node
        await neo4j_driver.execute_query(
            "MERGE (c:Character {name: $name, novel_id: $novel}) SET c.description = $d",
            name="林晓",
            novel=novel_id,
            d="a test character",
        )
    records, _, _ = await neo4j_driver.execute_query(
        "MATCH (c:Character {novel_id: $novel}) RETURN c.name AS name, c.description AS d",
        novel=novel_id,
    )
    assert [(r["name"], r["d"]) for r in records] == [("林晓", "a test character")]


async def test_health_checks_report_versions(base_settings: Settings) -> None:
    checks = await check_stores(base_settings)
    assert [c.store for c in checks] == ["redis", "mysql", "neo4j"]
    assert all(c.ok and c.version and c.rtt_ms > 0 for c in checks), checks


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DB_", "NEO4J_"))}
    return subprocess.run(
        [sys.executable, "-m", "kgworker", "doctor"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


def test_doctor_ok_and_failure(base_settings: Settings) -> None:
    env = settings_to_env(base_settings)
    ok = _doctor(env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [line.split()[:2] for line in ok.stdout.splitlines()[:3]] == [
        ["OK", "redis"],
        ["OK", "mysql"],
        ["OK", "neo4j"],
    ]
    broken = _doctor({**env, "NEO4J_URI": f"bolt://127.0.0.1:{_closed_port()}"})
    assert broken.returncode == 1
    lines = broken.stdout.splitlines()
    assert lines[2].startswith("FAIL  neo4j") and "ServiceUnavailable" in lines[2]
    assert lines[0].startswith("OK") and lines[1].startswith("OK")
    assert "Traceback" not in broken.stderr
