"""Chaishu rows for tests, written in raw SQL the way the chaishu app would write them.

Chapter ids are ``novel_id + 1 .. novel_id + n`` (novel ids are random and far apart), so
Chapter nodes of concurrent tests never share an id in the one Neo4j server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .codec import FAIL_MARKER, local_now

#: ai_providers rows as a usual chaishu install has them: (name, active).
PROVIDERS = (("openai", True), ("claude", True), ("zhipu", True), ("deepseek", True),
             ("ollama", False), ("localai", False), ("openai-compatible", False))

TASK_DEFAULTS: dict[str, Any] = {
    "task_name": "kg", "use_ai": True, "status": "created", "chapter_ids": None,
    "total_chapters": 0, "completed_chapters": 0, "failed_chapters": 0,
    "skipped_chapters": 0, "total_entities": 0, "total_relations": 0,
    "auto_retry_enabled": False, "retry_interval_minutes": 10, "retry_count": 0,
}


async def seed_chaishu(engine: AsyncEngine, default_provider: str = "openai") -> None:
    """The providers and the default extraction config."""
    now = local_now()
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO ai_providers (name, display_name, api_key, base_url, models, "
            "is_active, created_at, updated_at) VALUES (:name, :name, 'sk-test', "
            "'http://127.0.0.1:9', '[\"m\"]', :active, :now, :now)"
        ), [{"name": name, "active": active, "now": now} for name, active in PROVIDERS])
        await conn.execute(text(
            "INSERT INTO knowledge_graph_configs (name, ai_provider, ai_model, use_ai, "
            "max_content_length, enable_entity_extraction, enable_relation_extraction, "
            "entity_types, relation_types, rule_config, is_default, is_system) VALUES "
            "('默认配置', :provider, 'm', 1, 4000, 1, 1, '[]', '[]', '{}', 1, 1)"
        ), {"provider": default_provider})


async def add_book(
    engine: AsyncEngine, novel_id: int, chapters: int, *, fail: Sequence[int] = ()
) -> list[int]:
    """A novel and its chapters, numbered against id order (chapter 1 has the highest
    id), so a worker that sorts by id is caught; chapter numbers in ``fail`` carry the
    failure marker. Returns chapter ids by number."""
    ids = [novel_id + chapters + 1 - number for number in range(1, chapters + 1)]
    rows = []
    for number, chapter_id in enumerate(ids, start=1):
        content = f"第{number}章 旧主角走进了城。" + "字" * (number * 3)
        if number in fail:
            content += FAIL_MARKER
        rows.append({"id": chapter_id, "novel": novel_id, "title": f"第{number}章",
                     "content": content, "number": number, "words": len(content)})
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO novels (id, title, author) VALUES (:id, '旧书', '佚名')"
        ), {"id": novel_id})
        await conn.execute(text(
            "INSERT INTO chapters (id, novel_id, title, content, chapter_number, word_count) "
            "VALUES (:id, :novel, :title, :content, :number, :words)"
        ), rows)
    return ids


async def add_task(engine: AsyncEngine, novel_id: int, **values: Any) -> int:
    row = {**TASK_DEFAULTS, "novel_id": novel_id, "created_at": local_now(), **values}
    if row["chapter_ids"] is not None:
        row["chapter_ids"] = json.dumps(row["chapter_ids"])
    columns = ", ".join(row)
    params = ", ".join(f":{name}" for name in row)
    async with engine.begin() as conn:
        result = await conn.execute(
            text(f"INSERT INTO knowledge_graph_tasks ({columns}) VALUES ({params})"), row)
        return int(result.lastrowid)


async def add_chapter_rows(
    engine: AsyncEngine, task_id: int, statuses: dict[int, str], *, entities: int = 0,
    relations: int = 0,
) -> None:
    """Chapter rows in the given statuses (chapter id → status), as a worker left them."""
    now = local_now()
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO knowledge_graph_chapter_status (kg_task_id, chapter_id, status, "
            "entities_extracted, relations_extracted, error_message, created_at, updated_at) "
            "VALUES (:task, :chapter, :status, :e, :r, :msg, :now, :now)"
        ), [{"task": task_id, "chapter": cid, "status": status, "now": now,
             "e": entities if status == "completed" else 0,
             "r": relations if status == "completed" else 0,
             "msg": "boom" if status == "failed" else None}
            for cid, status in statuses.items()])


async def task_row(engine: AsyncEngine, task_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(
            text("SELECT * FROM knowledge_graph_tasks WHERE id = :id"), {"id": task_id}
        )).first()


async def chapter_rows(engine: AsyncEngine, task_id: int) -> dict[int, Any]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT * FROM knowledge_graph_chapter_status WHERE kg_task_id = :id"
        ), {"id": task_id})).all()
    return {int(row.chapter_id): row for row in rows}


async def set_task(engine: AsyncEngine, task_id: int, **values: Any) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    async with engine.begin() as conn:
        await conn.execute(text(
            f"UPDATE knowledge_graph_tasks SET {assignments} WHERE id = :id"
        ), {**values, "id": task_id})


async def set_content(engine: AsyncEngine, chapter_id: int, content: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE chapters SET content = :c WHERE id = :id"),
                           {"c": content, "id": chapter_id})
