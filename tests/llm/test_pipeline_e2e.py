"""End to end through the chaishu job handler on the real stores, with the fake provider.

MySQL holds the chaishu rows, Redis the limits and breaker, Neo4j the graph; the handler
claims chapters, calls LLMExtractor against the fake server and writes the graph. Faults
of all three classes must still complete the task; a restarted task must be answered
from the cache; names and relation types carrying Cypher text must end up as data.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from neo4j import AsyncDriver
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.factory import compose_handler
from kgworker.config import Settings
from kgworker.domain.names import display_name
from kgworker.llm.extractor import LLMExtractor
from kgworker.llm.providers import ProviderRegistry, specs_from_settings
from kgworker.queue.connection import RedisClient
from kgworker.runtime.handler import Job
from kgworker.store.schema.chaishu import (
    Chapter,
    KnowledgeGraphChapterStatus,
    KnowledgeGraphConfig,
    KnowledgeGraphTask,
    Novel,
)
from kgworker.store.schema.ours import LLMCall
from tests.fakellm import AnswerRequest, FakeLLM, FaultPlan, default_answerer
from tests.llm.conftest import CHAPTER_TEXT, PROVIDER, llm_settings
from tests.support.tasks import restart

CHAPTERS = [
    CHAPTER_TEXT,
    "黄昏，李四说：“王五，长安城好热闹。”\n王五笑道：“赵六也在。”\n赵六说：“李四，我们去青云门。”",
    "夜里，张三问：“赵六，你可见过李四？”\n赵六答：“见过，他去了长安城。”",
]


async def _seed(engine: AsyncEngine, novel_id: int, texts: list[str]) -> int:
    async with engine.begin() as conn:
        await conn.execute(insert(Novel).values(id=novel_id, title="测试小说", author="测试"))
        for number, content in enumerate(texts, 1):
            await conn.execute(
                insert(Chapter).values(
                    novel_id=novel_id,
                    title=f"第{number}章",
                    content=content,
                    chapter_number=number,
                    word_count=len(content),
                )
            )
        await conn.execute(
            insert(KnowledgeGraphConfig).values(
                name="default",
                ai_provider=PROVIDER,
                ai_model=None,
                use_ai=True,
                max_content_length=4000,
                enable_entity_extraction=True,
                enable_relation_extraction=True,
                entity_types=["人物", "地点", "组织"],
                relation_types=["FRIEND", "KNOWS", "ENEMY"],
                rule_config={},
                is_default=True,
                is_system=True,
            )
        )
        result = await conn.execute(
            insert(KnowledgeGraphTask).values(
                task_name="t", novel_id=novel_id, chapter_ids=None, use_ai=True, status="created"
            )
        )
        return int(result.inserted_primary_key[0])


class _Run:
    """A node: registry, extractor and handler; ``run(task_id)`` drains the task."""

    def __init__(
        self, settings: Settings, engine: AsyncEngine, driver: AsyncDriver, redis: RedisClient
    ) -> None:
        self.registry = ProviderRegistry(settings, specs_from_settings(settings))
        self.extractor = LLMExtractor(settings, self.registry, redis, engine)
        self.handler = compose_handler(
            settings, engine=engine, driver=driver, redis=redis, extractor=self.extractor
        )

    async def run(self, task_id: int) -> None:
        payload = {"task_id": task_id, "provider": PROVIDER}
        job = Job(PROVIDER, task_id, "claim-1", json.dumps(payload).encode(), payload)
        await self.handler.start(job)
        while (unit := await self.handler.claim_unit(job, "test-node", 60)) is not None:
            await self.handler.run_unit(job, unit)
        await self.handler.is_complete(job)


@pytest.fixture
async def node(
    settings: Settings,
    tables: AsyncEngine,
    neo4j_driver: AsyncDriver,
    redis: RedisClient,
    fake: FakeLLM,
) -> AsyncIterator[Any]:
    runs: list[_Run] = []

    def make(**overrides: Any) -> _Run:
        s = llm_settings(settings, fake.url, **overrides)
        runs.append(_Run(s, tables, neo4j_driver, redis))
        return runs[-1]

    yield make
    for run in runs:
        await run.registry.aclose()


async def _status(engine: AsyncEngine, task_id: int) -> tuple[str, list[str]]:
    async with engine.connect() as conn:
        task = (
            await conn.execute(
                select(KnowledgeGraphTask.status).where(KnowledgeGraphTask.id == task_id)
            )
        ).scalar_one()
        chapters = (
            (
                await conn.execute(
                    select(KnowledgeGraphChapterStatus.status).where(
                        KnowledgeGraphChapterStatus.kg_task_id == task_id
                    )
                )
            )
            .scalars()
            .all()
        )
    return task, sorted(chapters)


async def _characters(driver: AsyncDriver, novel_id: int) -> set[str]:
    records, _, _ = await driver.execute_query(
        "MATCH (c:Character {novel_id: $id}) RETURN c.name AS name", id=novel_id
    )
    return {r["name"] for r in records}


async def test_task_completes_through_faults_and_restart_hits_the_cache(
    node: Any,
    fake: FakeLLM,
    tables: AsyncEngine,
    neo4j_driver: AsyncDriver,
    novel_id: int,
    redis: RedisClient,
) -> None:
    task_id = await _seed(tables, novel_id, CHAPTERS)
    fake.plan = FaultPlan(
        rates={
            "fence": 0.3,
            "trailing_comma": 0.3,
            "think": 0.2,
            "http_429": 0.15,
            "http_500": 0.15,
            "duplicate": 0.2,
            "hallucinated": 0.2,
        },
        seed=42,
        retry_after=0.05,
    )
    await node().run(task_id)
    assert await _status(tables, task_id) == ("completed", ["completed"] * 3)
    assert await _characters(neo4j_driver, novel_id) == {"张三", "李四", "王五", "赵六"}
    paid = len([r for r in fake.log if r.status == 200])
    assert paid >= 3 and any(r.faults for r in fake.log)

    # Restart: chapters back to pending, graph deleted by task id, then a new node runs it.
    assert await restart(node().handler, task_id)
    assert await _characters(neo4j_driver, novel_id) == set()
    requests_before = len(fake.log)
    await node().run(task_id)
    assert len(fake.log) == requests_before  # zero new calls: all from the cache
    assert await _status(tables, task_id) == ("completed", ["completed"] * 3)
    assert await _characters(neo4j_driver, novel_id) == {"张三", "李四", "王五", "赵六"}
    async with tables.connect() as conn:
        cached = (
            await conn.execute(
                select(func.count()).select_from(LLMCall).where(LLMCall.cached.is_(True))
            )
        ).scalar_one()
    assert cached == paid


INJECTED_NAME = "王五'}) DETACH DELETE n //"
INJECTED_TYPE = "KNOWS]->(b) WITH b MATCH (x) DETACH DELETE x //"
#: The pipeline's entity resolution stores names in their display form (no spaces).
STORED_NAME = display_name(INJECTED_NAME)


async def test_cypher_in_names_and_types_is_stored_as_data(
    node: Any,
    fake: FakeLLM,
    tables: AsyncEngine,
    neo4j_driver: AsyncDriver,
    novel_id: int,
) -> None:
    text = f"张三说：“你好。”\n李四道：“{INJECTED_NAME}来了。”"

    def hostile(request: AnswerRequest) -> dict[str, Any]:
        full = default_answerer(request)
        full["characters"].append({"name": INJECTED_NAME, "description": "MATCH (n) RETURN n"})
        full["character_relationships"] = [
            {
                "from": "张三",
                "to": INJECTED_NAME,
                "relation": "FRIEND",
                "description": "}) DETACH DELETE n",
            },
            {"from": "张三", "to": "李四", "relation": INJECTED_TYPE},
        ]
        return full

    fake.answerer = hostile
    task_id = await _seed(tables, novel_id, [text])
    await node().run(task_id)
    assert await _status(tables, task_id) == ("completed", ["completed"])
    assert await _characters(neo4j_driver, novel_id) == {"张三", "李四", STORED_NAME}
    records, _, _ = await neo4j_driver.execute_query(
        "MATCH (a:Character {novel_id: $id})-[r]->(b:Character {novel_id: $id}) "
        "RETURN a.name AS a, type(r) AS t, b.name AS b, r.description AS d",
        id=novel_id,
    )
    rels = {(r["a"], r["t"], r["b"], r["d"]) for r in records}
    assert rels == {("张三", "FRIEND", STORED_NAME, "}) DETACH DELETE n")}
    records, _, _ = await neo4j_driver.execute_query(
        "MATCH (c:Chapter {novel_id: $id}) RETURN count(c) AS n", id=novel_id
    )
    assert records[0]["n"] == 1  # nothing was deleted by the injected text
