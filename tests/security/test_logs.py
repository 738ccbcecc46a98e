"""Secrets never reach the logs of ``kgworker run`` (stdout, stderr, ``--log-file``).

The worker runs at DEBUG with known, distinctive secrets: the MySQL password (of a user
made for the test), the Redis password (a dedicated ``requirepass`` server), the Neo4j
password, an API key in ``ai_providers`` and one in ``KG_LLM_PROVIDERS``, and
``KG_API_TOKEN``. Both providers answer 401 and quote the key back in their error body, as
real providers do, so the key is in the exception text the worker handles. Two more runs
fail to connect: a wrong Redis password in ``REDIS_URL``; a wrong MySQL password in
``DATABASE_URL`` with Neo4j on a closed port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

import kgworker.config.redact as log_setup
from kgworker.config import Settings, load_settings, settings_to_env
from kgworker.config.redact import SecretFilter, register_secrets, secret_values
from kgworker.domain.clock import chaishu_now
from kgworker.queue.connection import create_redis
from kgworker.store.migrate import upgrade
from kgworker.store.schema.chaishu import AIProvider, KnowledgeGraphConfig
from kgworker.store.schema.ours import LLMCall
from tests.ops.conftest import seed_book
from tests.security.conftest import (
    Kgworker,
    LeakyProvider,
    SecretRedis,
    assert_no_secret,
    clean_env,
    providers_json,
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_secrets_never_in_worker_logs(
    settings: Settings, mysql_engine: AsyncEngine, db_user: tuple[str, str],
    secret_redis: SecretRedis, leaky: LeakyProvider, tmp_path: Path, log_format: str,
) -> None:
    secrets = {
        "DB_PASSWORD": db_user[1],
        "REDIS_PASSWORD": secret_redis.password,
        "NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "ai_providers.api_key": "sk-table-" + uuid.uuid4().hex,
        "KG_LLM_PROVIDERS api_key": "sk-conf-" + uuid.uuid4().hex,
        "KG_API_TOKEN": "tok-" + uuid.uuid4().hex,
    }
    await upgrade(mysql_engine)
    now = chaishu_now()
    async with mysql_engine.begin() as conn:
        await conn.execute(insert(AIProvider).values(
            name="deepseek", display_name="DeepSeek", api_key=secrets["ai_providers.api_key"],
            base_url=leaky.url, models=["deepseek-chat"], is_active=True, created_at=now,
            updated_at=now))
        await conn.execute(insert(KnowledgeGraphConfig).values(
            name="default", ai_provider="deepseek", ai_model="deepseek-chat", use_ai=True,
            is_default=True, is_system=True))
    first = await seed_book(mysql_engine, chapters=2, title="一")
    second = await seed_book(mysql_engine, chapters=2, title="二")

    log_file = tmp_path / "logs" / "worker.log"
    env = clean_env(**settings_to_env(settings))
    env.update({
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(secret_redis.port), "REDIS_DB": "0",
        "REDIS_PASSWORD": secrets["REDIS_PASSWORD"],
        "DB_USER": db_user[0], "DB_PASSWORD": secrets["DB_PASSWORD"],
        "KG_LLM_PROVIDERS": providers_json("leaky", leaky.url,
                                           secrets["KG_LLM_PROVIDERS api_key"]),
        "KG_API_TOKEN": secrets["KG_API_TOKEN"], "KG_API_PORT": "0",
        "KG_LLM_MAX_ATTEMPTS": "1", "KG_LLM_BACKOFF_BASE": "0.01", "KG_BREAKER_THRESHOLD": "50",
        "KG_CHAPTER_MAX_ATTEMPTS": "1", "KG_HEARTBEAT_INTERVAL": "1",
        "KG_SHUTDOWN_GRACE": "2", "KG_STORE_DEADLINE": "5",
    })
    worker = Kgworker(env, tmp_path, "run", "--log-level", "DEBUG", "--log-format", log_format,
                      "--log-file", str(log_file), "--providers", "deepseek,leaky",
                      "--node-name", "secret-node")
    redis = create_redis(settings.model_copy(update={
        "redis_port": secret_redis.port, "redis_db": 0,
        "redis_password": SecretStr(secrets["REDIS_PASSWORD"])}))
    try:
        await redis.rpush("kg:ai_queue:deepseek",
                          json.dumps({"task_id": first.task_id, "provider": "deepseek"}))
        await redis.rpush("kg:ai_queue:leaky",
                          json.dumps({"task_id": second.task_id, "provider": "leaky"}))

        async def both_refused() -> bool:
            async with mysql_engine.connect() as conn:
                errors = (await conn.execute(select(LLMCall.provider, func.count()).where(
                    LLMCall.status == "error").group_by(LLMCall.provider))).all()
            return {row[0] for row in errors} >= {"deepseek", "leaky"}

        await until(both_refused, 60)
    finally:
        await redis.aclose()
        code = worker.stop()
    assert code == 0, worker.output()
    # both keys went over the wire and came back in an error body
    assert secrets["ai_providers.api_key"] in leaky.keys_seen
    assert secrets["KG_LLM_PROVIDERS api_key"] in leaky.keys_seen

    output = worker.output()
    logged = log_file.read_text(encoding="utf-8")
    # not vacuous: the run logged at DEBUG, the refusals and the Neo4j failure
    assert "DEBUG" in logged and "Incorrect API key provided" in logged, logged[-3000:]
    assert_no_secret("stdout/stderr", output, secrets)
    assert_no_secret("--log-file", logged, secrets)
    # the refusal reason is stored too (chapter error shown by chaishu, call accounting)
    async with mysql_engine.connect() as conn:
        stored = [str(v) for v in (await conn.execute(text(
            "SELECT error_message FROM knowledge_graph_chapter_status UNION ALL "
            "SELECT error FROM kgworker_llm_calls"))).scalars()]
    assert any("Incorrect API key provided" in v for v in stored), stored
    assert_no_secret("stored errors", "\n".join(stored), secrets)


async def test_secrets_never_in_logs_when_redis_refuses(
    settings: Settings, secret_redis: SecretRedis, tmp_path: Path
) -> None:
    """A wrong Redis password in REDIS_URL: the worker gives up (exit 1) without quoting it."""
    wrong = "Wrong-" + uuid.uuid4().hex[:12]
    neo = "Neo-" + uuid.uuid4().hex[:12]
    env = clean_env(**settings_to_env(settings))
    env.update({"REDIS_URL": f"redis://:{wrong}@127.0.0.1:{secret_redis.port}/0",
                "NEO4J_PASSWORD": neo, "KG_STORE_DEADLINE": "2", "KG_API_ENABLED": "false"})
    log_file = tmp_path / "w.log"
    worker = Kgworker(env, tmp_path, "run", "--log-level", "DEBUG", "--log-file", str(log_file))
    code = await worker.wait(60)
    output = worker.output() + log_file.read_text(encoding="utf-8")
    assert code != 0, output
    assert "redis" in output.lower(), output
    assert_no_secret("logs", output, {"REDIS_URL password": wrong, "NEO4J_PASSWORD": neo})


async def test_secrets_never_in_logs_when_mysql_and_neo4j_refuse(
    settings: Settings, secret_redis: SecretRedis, tmp_path: Path
) -> None:
    """Redis fine (password in REDIS_URL), MySQL refuses the password of DATABASE_URL, Neo4j
    is not there: the worker logs the failures at DEBUG, never a password."""
    db_pw, neo = "Wrong-" + uuid.uuid4().hex[:12], "Neo-" + uuid.uuid4().hex[:12]
    parts = settings.mysql_parts()
    env = clean_env(**settings_to_env(settings))
    for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME"):
        env.pop(name, None)
    env.update({
        "REDIS_URL": f"redis://:{secret_redis.password}@127.0.0.1:{secret_redis.port}/0",
        "DATABASE_URL": f"mysql+asyncmy://{parts.user}:{db_pw}@{parts.host}:{parts.port}/"
                        f"{parts.database}",
        "NEO4J_URI": f"bolt://127.0.0.1:{closed_port()}", "NEO4J_PASSWORD": neo,
        "KG_STORE_DEADLINE": "2", "KG_API_ENABLED": "false", "DB_POOL_TIMEOUT": "2",
    })
    log_file = tmp_path / "w.log"
    worker = Kgworker(env, tmp_path, "run", "--log-level", "DEBUG", "--log-file", str(log_file))
    try:
        await worker.wait(15)
    except AssertionError:
        worker.stop()
    output = worker.output() + log_file.read_text(encoding="utf-8")
    assert "access denied" in output.lower() or "1045" in output, output[-3000:]
    assert_no_secret("logs", output, {"DATABASE_URL password": db_pw, "NEO4J_PASSWORD": neo,
                                      "REDIS_URL password": secret_redis.password})


def test_secret_filter_masks_parts_of_secrets() -> None:
    """A URL's password alone (also percent-decoded), each api_key of KG_LLM_PROVIDERS
    alone, and keys registered at run time (``ai_providers`` rows) are masked, not only
    the whole secret value."""
    settings = load_settings({
        "database_url": "mysql+asyncmy://u:p%40ss-w0rd@db:3306/chaishu",
        "redis_url": "redis://:r3dis-pass@redis:6379/0",
        "kg_llm_providers": providers_json("x", "http://h", "sk-only-the-key"),
    }, environ={}, dotenv_path=None)
    secret_filter = SecretFilter(secret_values(settings))
    saved = list(log_setup._FILTERS)
    log_setup._FILTERS[:] = [secret_filter]
    try:
        register_secrets(["sk-from-the-table"])
    finally:
        log_setup._FILTERS[:] = saved
    message = "p@ss-w0rd p%40ss-w0rd r3dis-pass sk-only-the-key sk-from-the-table"
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    secret_filter.filter(record)
    assert record.getMessage() == "*** *** *** *** ***"
