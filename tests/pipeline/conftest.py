"""Pipeline fixtures: a migrated chaishu database, books of sample chapters, a handler.

Chapter ids are ``novel_id + i`` (novel ids are random and far apart), so the Chapter
nodes of concurrent test databases never share an id in the one Neo4j server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from neo4j import AsyncDriver
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.factory import compose_handler
from kgworker.chaishu.handler import ChaishuHandler
from kgworker.config import Settings
from kgworker.domain.clock import chaishu_now
from kgworker.domain.extraction import Extractor
from kgworker.queue.connection import RedisClient
from kgworker.runtime.handler import Job, JobStart
from kgworker.store.migrate import upgrade
from kgworker.store.schema.chaishu import (
    Chapter,
    KnowledgeGraphChapterStatus,
    KnowledgeGraphConfig,
    KnowledgeGraphTask,
    Novel,
)
from tests.support.fixed import FixedExtractor, sample_chapter

PROVIDER = "openai"


@pytest.fixture
async def db(mysql_engine: AsyncEngine) -> AsyncEngine:
    """The test database with every migration applied and a default config row."""
    await upgrade(mysql_engine)
    async with mysql_engine.begin() as conn:
        await conn.execute(insert(KnowledgeGraphConfig).values(
            name="默认配置", ai_provider=PROVIDER, ai_model="gpt-test", use_ai=True,
            max_content_length=4000, enable_entity_extraction=True,
            enable_relation_extraction=True, entity_types=[], relation_types=[],
            rule_config={}, is_default=True, is_system=True,
        ))
    return mysql_engine


async def add_book(
    engine: AsyncEngine, novel_id: int, chapters: int, *, seed: int = 7,
    texts: Sequence[str] | None = None, title: str = "测试小说",
) -> list[int]:
    """A novel and its chapters (inserted in shuffled id order); returns ids by number."""
    texts = list(texts) if texts is not None else [
        sample_chapter(n, seed=seed) for n in range(1, chapters + 1)
    ]
    ids = [novel_id + n for n in range(1, len(texts) + 1)]
    order = sorted(range(len(texts)), key=lambda i: (i * 7919) % len(texts))
    async with engine.begin() as conn:
        await conn.execute(insert(Novel).values(id=novel_id, title=title, author="佚名"))
        await conn.execute(insert(Chapter), [
            {"id": ids[i], "novel_id": novel_id, "title": f"第{i + 1}章",
             "content": texts[i], "chapter_number": i + 1, "word_count": len(texts[i])}
            for i in order
        ])
    return ids


async def add_task(engine: AsyncEngine, novel_id: int, **values: Any) -> int:
    async with engine.begin() as conn:
        row = {
            "task_name": "kg", "novel_id": novel_id, "use_ai": True, "status": "created",
            "total_chapters": 0, "completed_chapters": 0, "failed_chapters": 0,
            "skipped_chapters": 0, "total_entities": 0, "total_relations": 0,
            "auto_retry_enabled": False, "retry_interval_minutes": 10, "retry_count": 0,
            "created_at": chaishu_now(), **values,
        }
        result = await conn.execute(insert(KnowledgeGraphTask).values(**row))
        return int(result.inserted_primary_key[0])  # type: ignore[index]


async def task_row(engine: AsyncEngine, task_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(
            select(KnowledgeGraphTask).where(KnowledgeGraphTask.id == task_id))).one()


async def chapter_rows(engine: AsyncEngine, task_id: int) -> dict[int, Any]:
    CS = KnowledgeGraphChapterStatus
    async with engine.connect() as conn:
        rows = (await conn.execute(select(CS).where(CS.kg_task_id == task_id))).all()
    return {row.chapter_id: row for row in rows}


async def set_task(engine: AsyncEngine, task_id: int, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(KnowledgeGraphTask).where(KnowledgeGraphTask.id == task_id).values(**values))


def make_job(task_id: int, provider: str = PROVIDER, claim: str = "c1") -> Job:
    payload = {"task_id": task_id, "provider": provider}
    return Job(provider=provider, task_id=task_id, claim_id=claim,
               raw=json.dumps(payload).encode(), payload=payload, node="test")


@dataclass
class Env:
    settings: Settings
    db: AsyncEngine
    driver: AsyncDriver
    redis: RedisClient

    def handler(self, extractor: Extractor | None = None, **kwargs: Any) -> ChaishuHandler:
        return compose_handler(self.settings, engine=self.db, driver=self.driver,
                               redis=self.redis, extractor=extractor or FixedExtractor(),
                               **kwargs)


@pytest.fixture
async def env(
    settings: Settings, db: AsyncEngine, neo4j_driver: AsyncDriver, redis: RedisClient
) -> Env:
    fast = settings.model_copy(update={"kg_cancel_poll_interval": 0.1})
    return Env(fast, db, neo4j_driver, redis)


async def drive(
    handler: ChaishuHandler, job: Job, *, slots: int = 1, owner: str = "node-a",
    lease: float = 30.0, start: bool = True,
) -> list[int]:
    """Work a job like the runtime would, with ``slots`` parallel slots; returns the
    chapter ids in the order they were claimed."""
    if start and await handler.start(job) is JobStart.DONE:
        return []
    claimed: list[int] = []

    async def slot() -> None:
        while True:
            unit = await handler.claim_unit(job, owner, lease)
            if unit is None:
                return
            claimed.append(unit.data.chapter_id)
            await handler.run_unit(job, unit)

    while True:  # like the claiming node: work, then ask is_complete (which reaps)
        before = len(claimed)
        await asyncio.gather(*(slot() for _ in range(slots)))
        if await handler.is_complete(job) or len(claimed) == before:
            return claimed


async def drain(pubsub: Any, seconds: float = 1.0) -> list[dict[str, Any]]:
    """Every message that arrives on a subscription within ``seconds``, decoded."""
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if msg is not None:
            events.append(json.loads(msg["data"]))
    await pubsub.aclose()
    return events
