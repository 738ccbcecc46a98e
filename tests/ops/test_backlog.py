"""``kgworker_backlog_chapters``: during a run, the published backlog is the chapter rows
still to do of the open task, plus the chapters of the task still waiting in the queue."""

from __future__ import annotations

import json

import httpx
from neo4j import AsyncDriver
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.observe.metrics import exported_names
from kgworker.queue.connection import RedisClient
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus as CS

from .conftest import Book, rules_book
from .live import LiveNode, live_node, until


async def _left(engine: AsyncEngine, task_id: int) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(
            CS.kg_task_id == task_id, CS.status.in_(("pending", "running")))) or 0)


async def _scrape(live: LiveNode) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    live.api.exporter._read_at = live.api.exporter._backlog_at = float("-inf")  # no cache
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        text = (await client.get("/metrics")).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _backlog(samples: dict, provider: str) -> float | None:
    return samples.get(("kgworker_backlog_chapters", (("provider", provider),)))


async def test_backlog_equals_the_chapters_left_during_a_run(
    settings: Settings, redis: RedisClient, mysql_engine: AsyncEngine, neo4j_driver: AsyncDriver,
    chaishu: Book, novel_ids: list[int],
) -> None:
    assert {"kgworker_backlog_chapters", "kgworker_backlog_read_ok"} <= exported_names()
    working = await rules_book(mysql_engine, novel_ids[0], 6)
    waiting = await rules_book(mysql_engine, novel_ids[1], 4)
    await redis.rpush("kg:ai_queue:rules", _item(working))
    async with live_node(settings, mysql_engine, redis, neo4j_driver) as live:
        # both slots hold a chapter of the first book; the second book waits in the queue
        await until(lambda: _running(live, 2), "two chapters being extracted")
        await redis.rpush("kg:ai_queue:rules", _item(waiting))
        samples = await _scrape(live)
        assert await redis.llen("kg:ai_queue:rules") == 1  # no free slot claims it
        assert await _left(mysql_engine, working) == 6  # 2 running + 4 pending
        assert _backlog(samples, "rules") == 6 + 4
        assert samples[("kgworker_backlog_read_ok", ())] == 1
        live.extractor.release(3)  # three chapters finish; the slots take the next ones
        await until(lambda: _done(mysql_engine, working, 3), "three chapters completed")
        await until(lambda: _running(live, 2), "the slots busy again")
        samples = await _scrape(live)
        assert await _left(mysql_engine, working) == 3
        assert _backlog(samples, "rules") == 3 + 4
        live.extractor.open()
        await until(lambda: _done(mysql_engine, waiting, 4), "the second book completed")
        samples = await _scrape(live)
        assert _backlog(samples, "rules") == 0


def _item(task_id: int) -> str:
    return json.dumps({"task_id": task_id, "provider": "rules"})


async def _running(live: LiveNode, n: int) -> bool:
    return live.extractor.waiting == n


async def _done(engine: AsyncEngine, task_id: int, n: int) -> bool:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(
            CS.kg_task_id == task_id, CS.status == "completed")) or 0) >= n
