"""A whole book through a MySQL outage pays the provider exactly what an undisturbed book
does (issue 15): the node waits for MySQL instead of spending chapter attempts, and calls
the LLM only when the cache can be read; every paid call is recorded once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.factory import compose_handler
from kgworker.chaishu.node import run_worker
from kgworker.config import Settings
from kgworker.llm.extractor import create_llm_extractor
from kgworker.queue.connection import RedisClient
from kgworker.store.graph import create_driver
from kgworker.store.migrate import upgrade
from kgworker.store.mysql import create_engine
from tests.fakellm import FakeLLM
from tests.llm.conftest import CHAPTER_TEXT, PROVIDER, llm_settings
from tests.support.tcp_gate import HOST, TcpGate

CHAPTERS = 6
FAST: dict[str, Any] = {
    "kg_worker_providers": [PROVIDER],
    "kg_workers_per_provider": 2,
    "kg_lease_seconds": 3.0,
    "kg_reaper_interval": 0.3,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_retry_delay": 0.05,
    "kg_duty_interval": 0.5,
    "kg_cancel_poll_interval": 0.2,
}


async def _book(engine: AsyncEngine, novel_id: int, tag: str) -> int:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO novels (id, title, author) VALUES (:n, 'b', 'a')"),
                           {"n": novel_id})
        for number in range(1, CHAPTERS + 1):
            await conn.execute(text(
                "INSERT INTO chapters (id, novel_id, title, content, chapter_number, word_count)"
                " VALUES (:id, :n, :t, :c, :num, 10)"),
                {"id": novel_id + number, "n": novel_id, "t": f"{number}",
                 "c": f"{CHAPTER_TEXT}\n{tag}第{number}段。", "num": number})
        result = await conn.execute(text(
            "INSERT INTO knowledge_graph_tasks (novel_id, use_ai, status, total_chapters,"
            " completed_chapters, failed_chapters, skipped_chapters, total_entities,"
            " total_relations, auto_retry_enabled, retry_interval_minutes, retry_count)"
            " VALUES (:n, 1, 'created', 0, 0, 0, 0, 0, 0, 0, 10, 0)"), {"n": novel_id})
        return int(result.lastrowid)


async def _run(settings: Settings, redis: RedisClient, gate: TcpGate | None,
               admin: AsyncEngine, novel_id: int, tag: str) -> None:
    """One book through a node whose MySQL is behind ``gate`` (shut for a while mid-book)."""
    task = await _book(admin, novel_id, tag)
    engine = create_engine(settings, isolation_level="READ COMMITTED")
    driver = create_driver(settings)
    llm = await create_llm_extractor(settings, redis, engine)
    handler = compose_handler(settings, engine=engine, redis=redis, driver=driver, llm=llm)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, handler=handler, stop=stop))
    try:
        await redis.rpush(f"kg:ai_queue:{PROVIDER}",
                          f'{{"task_id": {task}, "provider": "{PROVIDER}"}}')
        shut = gate is None
        deadline = time.monotonic() + 90
        while True:
            async with admin.connect() as conn:
                done = int((await conn.execute(text(
                    "SELECT COUNT(*) FROM knowledge_graph_chapter_status WHERE kg_task_id = :t"
                    " AND status = 'completed'"), {"t": task})).scalar() or 0)
                status = (await conn.execute(text(
                    "SELECT status FROM knowledge_graph_tasks WHERE id = :t"), {"t": task}
                )).scalar()
            if status == "completed":
                break
            assert status != "failed" and time.monotonic() < deadline, (status, done)
            if not shut and done >= 2:
                assert gate is not None
                await gate.shut()  # MySQL down mid-book, chapters in flight
                await asyncio.sleep(4.0)
                await gate.open()
                shut = True
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
        await llm.aclose()
        await driver.close()
        await engine.dispose()


@pytest.mark.slow
async def test_a_mysql_outage_costs_no_extra_llm_call(
    settings: Settings, redis: RedisClient, mysql_engine: AsyncEngine, novel_id: int,
) -> None:
    await upgrade(mysql_engine)
    async with mysql_engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO knowledge_graph_configs (name, ai_provider, ai_model, use_ai,"
            " max_content_length, enable_entity_extraction, enable_relation_extraction,"
            " entity_types, relation_types, rule_config, is_default, is_system) VALUES"
            " ('c', :p, 'fake-chat', 1, 4000, 1, 1, '[]', '[]', '{}', 1, 1)"), {"p": PROVIDER})
    async with FakeLLM() as fake:
        fake.latency = 0.3
        base = llm_settings(settings.model_copy(update=FAST), fake.url)
        await _run(base, redis, None, mysql_engine, novel_id, "甲")
        undisturbed = sum(r.status == 200 for r in fake.log)
        fake.log.clear()
        gate = TcpGate(HOST, base.mysql_parts().port)
        await gate.open()
        try:
            gated = base.model_copy(update={"db_port": gate.port})
            await _run(gated, redis, gate, mysql_engine, novel_id + 500, "乙")
        finally:
            await gate.aclose()
        disturbed = sum(r.status == 200 for r in fake.log)
    assert undisturbed >= CHAPTERS
    assert disturbed == undisturbed  # not one answer paid for twice
    async with mysql_engine.connect() as conn:
        result = await conn.execute(text(
            "SELECT COUNT(*) FROM kgworker_llm_calls WHERE cached = 0"))
        recorded = int(result.scalar() or 0)
        result = await conn.execute(text(
            "SELECT COUNT(*) FROM knowledge_graph_chapter_status WHERE status = 'failed'"))
        failed = int(result.scalar() or 0)
    assert recorded == undisturbed + disturbed  # every paid call recorded exactly once
    assert failed == 0
