"""Secrets never appear in what operators read (``kgworker status --json``, the status
table, ``kgworker config show``, ``/status`` and ``/metrics`` of a running worker), and
``ai_providers`` API keys are never written to Redis in clear.

A real ``kgworker run`` works two tasks: one with a keyed provider from ``ai_providers``
(the fake model: the task completes) and one with a keyed provider from
``KG_LLM_PROVIDERS`` that refuses the key and quotes it back (its chapters fail). Then every
Redis key and value (strings, lists, hashes, sets, sorted sets, streams) is scanned for
both keys, in clear and base64.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings, settings_to_env
from kgworker.domain.clock import chaishu_now
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.store.migrate import upgrade
from kgworker.store.schema.chaishu import AIProvider, KnowledgeGraphConfig, KnowledgeGraphTask
from tests.fakellm import FakeLLM
from tests.ops.conftest import seed_book
from tests.security.conftest import (
    Kgworker,
    LeakyProvider,
    SecretRedis,
    assert_no_secret,
    clean_env,
    providers_json,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def redis_dump(redis: RedisClient) -> bytes:
    """Every key and every value of the database, concatenated."""
    chunks: list[bytes] = []
    async for key in redis.scan_iter(count=500):
        raw = key if isinstance(key, bytes) else str(key).encode()
        chunks.append(raw)
        kind = await redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        values: Any
        if kind == "string":
            values = [await redis.get(key)]
        elif kind == "list":
            values = await redis.lrange(key, 0, -1)
        elif kind == "hash":
            values = [x for kv in (await redis.hgetall(key)).items() for x in kv]
        elif kind == "set":
            values = list(await redis.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [json.dumps(e, default=str) for e in await redis.xrange(key)]
        else:
            values = [kind]
        for value in values:
            chunks.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(chunks)


async def test_keys_not_in_status_outputs_nor_in_redis(
    settings: Settings, mysql_engine: AsyncEngine, db_user: tuple[str, str],
    secret_redis: SecretRedis, leaky: LeakyProvider, tmp_path: Path,
) -> None:
    table_key, conf_key = "sk-table-" + uuid.uuid4().hex, "sk-conf-" + uuid.uuid4().hex
    token = "tok-" + uuid.uuid4().hex
    secrets = {"ai_providers.api_key": table_key, "KG_LLM_PROVIDERS api_key": conf_key,
               "KG_API_TOKEN": token, "DB_PASSWORD": db_user[1],
               "REDIS_PASSWORD": secret_redis.password,
               "NEO4J_PASSWORD": settings.neo4j_password.get_secret_value()}
    await upgrade(mysql_engine)
    now = chaishu_now()
    async with FakeLLM() as fake:
        async with mysql_engine.begin() as conn:
            await conn.execute(insert(AIProvider).values(
                name="deepseek", display_name="DeepSeek", api_key=table_key, base_url=fake.url,
                models=["deepseek-chat"], is_active=True, created_at=now, updated_at=now))
            await conn.execute(insert(KnowledgeGraphConfig).values(
                name="default", ai_provider="deepseek", ai_model="deepseek-chat", use_ai=True,
                is_default=True, is_system=True))
        good = await seed_book(mysql_engine, chapters=3, title="好")
        bad = await seed_book(mysql_engine, chapters=2, title="坏")
        api_port = free_port()
        env = clean_env(**settings_to_env(settings))
        env.update({
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(secret_redis.port), "REDIS_DB": "0",
            "REDIS_PASSWORD": secret_redis.password,
            "DB_USER": db_user[0], "DB_PASSWORD": db_user[1],
            "KG_LLM_PROVIDERS": providers_json("leaky", leaky.url, conf_key),
            "KG_API_TOKEN": token, "KG_API_PORT": str(api_port),
            "KG_LLM_MAX_ATTEMPTS": "1", "KG_BREAKER_THRESHOLD": "50",
            "KG_CHAPTER_MAX_ATTEMPTS": "1", "KG_HEARTBEAT_INTERVAL": "1",
            "KG_SHUTDOWN_GRACE": "2",
        })
        worker = Kgworker(env, tmp_path, "run", "--providers", "deepseek,leaky",
                          "--node-name", "status-node", "--log-level", "DEBUG")
        redis = create_redis(settings.model_copy(update={
            "redis_port": secret_redis.port, "redis_db": 0,
            "redis_password": SecretStr(secret_redis.password)}))
        try:
            for task, provider in ((good, "deepseek"), (bad, "leaky")):
                await redis.rpush(f"kg:ai_queue:{provider}",
                                  json.dumps({"task_id": task.task_id, "provider": provider}))
            deadline = time.monotonic() + 60
            while True:
                async with mysql_engine.connect() as conn:
                    states = dict((await conn.execute(select(
                        KnowledgeGraphTask.id, KnowledgeGraphTask.status))).all())
                if states.get(good.task_id) == "completed" and \
                        states.get(bad.task_id) in ("failed", "paused"):
                    break
                assert time.monotonic() < deadline, (states, worker.output()[-3000:])
                await asyncio.sleep(0.3)
            assert conf_key in leaky.keys_seen  # the key went out and came back quoted

            # what an operator reads, while the worker is up
            code, table = await cli(env, tmp_path, "status")
            assert code == 0 and "status-node" in table, table
            code, as_json = await cli(env, tmp_path, "status", "--json")
            assert code == 0 and "status-node" in as_json, as_json
            code, shown = await cli(env, tmp_path, "config", "show")
            assert code == 0 and "KG_LLM_PROVIDERS" in shown, shown
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}",
                                         headers={"Authorization": f"Bearer {token}"},
                                         timeout=30) as client:
                status = await client.get("/status")
                metrics = await client.get("/metrics")
            assert status.status_code == 200 and metrics.status_code == 200
            live = await redis_dump(redis)  # while the node is up: registry, slots, limits
            assert b"status-node" in live
            for where, content in (("status table", table), ("status --json", as_json),
                                   ("config show", shown), ("/status", status.text),
                                   ("/metrics", metrics.text)):
                assert_no_secret(where, content, secrets)
        finally:
            assert worker.stop() == 0, worker.output()[-3000:]
            await asyncio.sleep(0)
        assert_no_secret("worker output", worker.output(), secrets)

        # nothing the fleet wrote to Redis holds a key, in clear or base64
        dump = live + await redis_dump(redis)
        await redis.aclose()
        for name, value in (("ai_providers.api_key", table_key),
                            ("KG_LLM_PROVIDERS api_key", conf_key)):
            for form in (value.encode(), base64.b64encode(value.encode())):
                assert form not in dump, f"{name} found in Redis"
