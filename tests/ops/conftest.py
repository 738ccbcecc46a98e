"""Fixtures for the operations tests: a migrated chaishu database with one book and task,
and small rules books under novel ids no other test uses."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from neo4j import AsyncDriver
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.store.migrate import upgrade
from kgworker.store.schema.chaishu import (
    AIProvider,
    Chapter,
    KnowledgeGraphConfig,
    KnowledgeGraphTask,
    Novel,
)


@dataclass
class Book:
    novel_id: int
    chapter_ids: list[int]
    task_id: int  #: a ``created`` task for the deepseek provider (use_ai = true)


async def seed_book(engine: AsyncEngine, chapters: int = 3, title: str = "测试之书") -> Book:
    now = chaishu_now()
    async with engine.begin() as conn:
        novel = await conn.execute(insert(Novel).values(title=title, author="t"))
        novel_id = novel.inserted_primary_key[0]
        ids = []
        for n in range(1, chapters + 1):
            result = await conn.execute(
                insert(Chapter).values(
                    novel_id=novel_id, title=f"第{n}章", content="张三遇见李四。" * 5,
                    chapter_number=n, word_count=35,
                )
            )
            ids.append(result.inserted_primary_key[0])
        task_id = (
            await conn.execute(
                insert(KnowledgeGraphTask).values(
                    task_name=f"{title} kg", novel_id=novel_id, use_ai=True, status="created",
                    total_chapters=chapters, created_at=now, updated_at=now,
                )
            )
        ).inserted_primary_key[0]
    return Book(novel_id, ids, task_id)


@pytest.fixture
async def chaishu(mysql_engine: AsyncEngine) -> Book:
    """Migrated schema, providers deepseek (active) and ollama (inactive), a default config
    pointing at deepseek, and one book with a created task."""
    await upgrade(mysql_engine)
    now = chaishu_now()
    async with mysql_engine.begin() as conn:
        await conn.execute(
            insert(AIProvider),
            [
                {"name": "deepseek", "display_name": "DeepSeek", "api_key": "sk-test",
                 "base_url": "http://127.0.0.1:9", "models": ["deepseek-chat"],
                 "is_active": True, "created_at": now, "updated_at": now},
                {"name": "ollama", "display_name": "Ollama", "base_url": "http://127.0.0.1:9",
                 "api_key": None, "models": ["qwen"], "is_active": False,
                 "created_at": now, "updated_at": now},
            ],
        )
        await conn.execute(
            insert(KnowledgeGraphConfig).values(
                name="default", ai_provider="deepseek", ai_model="deepseek-chat", use_ai=True,
                is_default=True, is_system=True,
            )
        )
    return await seed_book(mysql_engine)


SAMPLE_TEXT = "沈青山在渡口遇见李明月。李明月对沈青山说：“明天再来。”" * 4


@pytest.fixture
async def novel_ids(neo4j_driver: AsyncDriver) -> AsyncIterator[list[int]]:
    """Two novel ids no other test uses (chapter ids follow them); graphs removed after."""
    ids = random.sample(range(10**9, 2 * 10**9, 1000), 2)
    yield ids
    await neo4j_driver.execute_query(
        "MATCH (n) WHERE n.novel_id IN $ids OR (n:Novel AND n.id IN $ids) DETACH DELETE n",
        ids=ids,
    )


async def rules_book(
    engine: AsyncEngine, novel_id: int, chapters: int, title: str | None = None,
    texts: list[str] | None = None,
) -> int:
    """A small novel and a ``created`` rules task (use_ai = false) over it; the task id."""
    now = chaishu_now()
    async with engine.begin() as conn:
        await conn.execute(insert(Novel).values(id=novel_id, title=title or f"书{novel_id}",
                                                author="t"))
        await conn.execute(insert(Chapter), [
            {"id": novel_id + n, "novel_id": novel_id, "title": f"第{n}章",
             "content": texts[n - 1] if texts else SAMPLE_TEXT,
             "chapter_number": n, "word_count": 120}
            for n in range(1, chapters + 1)
        ])
        result = await conn.execute(insert(KnowledgeGraphTask).values(
            task_name="burst", novel_id=novel_id, use_ai=False, status="created",
            total_chapters=chapters, created_at=now, updated_at=now))
    return int(result.inserted_primary_key[0])  # type: ignore[index]
