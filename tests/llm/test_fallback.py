"""Provider fallback with two real worker processes, MySQL, Neo4j and the fake provider.

deepseek is paused with books waiting on its queue and fallback on: the books move to the
backup qwen-local and finish there; the record (``kgworker_task_moves``, provider and model
per chapter on ``kgworker_chapter_runs``, ``kgworker status``) says so. After resume a new
book runs on deepseek again. Below it: the mover's rules without processes, and the cache
never answering one model's request with another model's answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu import fallback
from kgworker.config import Settings
from kgworker.config.specs import parse_fallback
from kgworker.keys import queue_key
from kgworker.observe.status import gather
from kgworker.queue import switches
from kgworker.queue.connection import RedisClient
from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphConfig, KnowledgeGraphTask, Novel
from kgworker.store.schema.ours import ChapterRun, LLMCall, TaskMove
from tests.fakellm import FakeLLM
from tests.llm.conftest import CHAPTER_TEXT, ROOT_DIR

CHAPTERS = [CHAPTER_TEXT, *(CHAPTER_TEXT.replace("清晨", when) for when in ("黄昏", "夜里"))]
CHAIN = "deepseek:qwen-local,rules"


async def enqueue(redis: RedisClient, task_id: int, provider: str) -> None:
    """RPUSH the item as the chaishu producer does."""
    item = json.dumps({"task_id": task_id, "provider": provider})
    await redis.rpush(queue_key(provider), item)


def providers_json(url: str) -> str:
    return json.dumps([
        {"name": "deepseek", "base_url": url, "api_key": "k", "models": ["fake-chat"]},
        {"name": "qwen-local", "base_url": url, "api_key": "k", "models": ["qwen-fake"]},
    ])


async def seed(engine: AsyncEngine, novel_id: int, tasks: int) -> list[int]:
    async with engine.begin() as conn:
        if await conn.scalar(select(Novel.id).where(Novel.id == novel_id)) is None:
            await conn.execute(insert(Novel).values(id=novel_id, title="备用", author="测试"))
            for number, content in enumerate(CHAPTERS, 1):
                await conn.execute(insert(Chapter).values(
                    novel_id=novel_id, title=f"第{number}章", content=content,
                    chapter_number=number, word_count=len(content)))
            await conn.execute(insert(KnowledgeGraphConfig).values(
                name="default", ai_provider="deepseek", use_ai=True, max_content_length=4000,
                enable_entity_extraction=True, enable_relation_extraction=True,
                entity_types=["人物", "地点", "组织"], relation_types=["FRIEND", "KNOWS"],
                rule_config={}, is_default=True, is_system=True))
        ids = []
        for _ in range(tasks):
            result = await conn.execute(insert(KnowledgeGraphTask).values(
                task_name="t", novel_id=novel_id, use_ai=True, status="created"))
            ids.append(int(result.inserted_primary_key[0]))
    return ids


async def wait_completed(engine: AsyncEngine, ids: list[int], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(KnowledgeGraphTask.id, KnowledgeGraphTask.status,
                                              KnowledgeGraphTask.completed_chapters)
                                       .where(KnowledgeGraphTask.id.in_(ids)))).all()
        if all(r.status == "completed" and r.completed_chapters == len(CHAPTERS) for r in rows):
            return
        assert time.monotonic() < deadline, f"tasks not completed: {rows}"
        await asyncio.sleep(0.3)


async def producers(engine: AsyncEngine, ids: list[int]) -> set[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(ChapterRun.task_id, ChapterRun.provider, ChapterRun.model)
                                  .where(ChapterRun.task_id.in_(ids)))
        return {tuple(r) for r in rows}


async def test_waiting_tasks_move_to_the_backup_and_come_back_after_resume(
    settings: Settings, worker_env: dict[str, str], redis: RedisClient,
    tables: AsyncEngine, novel_id: int, fake: FakeLLM,
) -> None:
    env = {**worker_env, "KG_LLM_PROVIDERS": providers_json(fake.url),
           "KG_WORKER_PROVIDERS": "deepseek,qwen-local,rules", "KG_PROVIDER_FALLBACK": CHAIN,
           "KG_DUTY_INTERVAL": "0.3", "KG_WORKER_NODE_NAME": "fb", "KG_API_ENABLED": "false",
           "KG_LLM_CACHE": "true", "KG_SHUTDOWN_GRACE": "2"}
    env.pop("KG_ADAPTIVE_PROVIDERS", None)
    moved_ids = await seed(tables, novel_id, 2)
    await switches.suspend(redis, "deepseek")
    await switches.set_fallback(redis, "deepseek", True)
    for task_id in moved_ids:
        await enqueue(redis, task_id, "deepseek")
    procs = [subprocess.Popen([sys.executable, "-m", "tests.llm.fallback_worker"], cwd=ROOT_DIR,
                              env={**env, "KG_WORKER_NODE_NAME": f"fb-{i}"},
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        await wait_completed(tables, moved_ids)
        assert await redis.llen(queue_key("deepseek")) == 0
        assert await producers(tables, moved_ids) == {
            (t, "qwen-local", "qwen-fake") for t in moved_ids}
        async with tables.connect() as conn:
            moves = (await conn.execute(select(TaskMove.task_id, TaskMove.from_provider,
                                               TaskMove.to_provider))).all()
        assert sorted(tuple(m) for m in moves) == [(t, "deepseek", "qwen-local") for t in moved_ids]
        snapshot = await gather(settings.model_copy(update={"kg_provider_fallback": CHAIN}),
                                redis, tables)
        shown = {m["task_id"]: m for m in snapshot["moves"]}
        assert shown[moved_ids[0]]["chapters_by_producer"] == {"qwen-local/qwen-fake": 3}
        assert snapshot["fallback"][0]["enabled"] and snapshot["fallback"][0]["suspended"]

        await switches.lift(redis, "deepseek")
        fake.log.clear()
        (back_id,) = await seed(tables, novel_id, 1)
        await enqueue(redis, back_id, "deepseek")
        await wait_completed(tables, [back_id])
        assert await producers(tables, [back_id]) == {(back_id, "deepseek", "fake-chat")}
        async with tables.connect() as conn:
            assert len((await conn.execute(select(TaskMove.id))).all()) == 2  # no new move
            statuses = {r[0] for r in await conn.execute(
                select(LLMCall.status).where(LLMCall.task_id == back_id))}
        assert statuses == {"ok"} and fake.log  # deepseek itself answered
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errors = [proc.communicate(timeout=30)[1] for proc in procs]
        if os.environ.get("KGT_SHOW_LOGS"):
            print("\n".join(errors))
    assert all(proc.returncode == 0 for proc in procs), errors[0][-3000:]


async def test_mover_rules(settings: Settings, redis: RedisClient) -> None:
    """Nothing moves unless enabled and suspended; a suspended backup is skipped."""
    s = settings.model_copy(update={"kg_provider_fallback": CHAIN})
    assert parse_fallback(CHAIN) == {"deepseek": ("qwen-local", "rules")}
    with pytest.raises(ValueError, match="cannot back itself up"):
        parse_fallback("deepseek:deepseek")
    await enqueue(redis, 1, "deepseek")
    await switches.suspend(redis, "deepseek")
    assert await fallback.move_waiting(s, redis, None) == []  # not enabled
    await switches.set_fallback(redis, "deepseek", True)
    await switches.suspend(redis, "qwen-local")
    moved = await fallback.move_waiting(s, redis, None)
    assert [(m.task_id, m.to_provider) for m in moved] == [(1, "rules")]
    item = json.loads(await redis.lpop(queue_key("rules")))
    assert item == {"task_id": 1, "provider": "rules", "moved_from": "deepseek"}
    await switches.lift(redis, "deepseek")
    await enqueue(redis, 2, "deepseek")
    assert await fallback.move_waiting(s, redis, None) == []  # resumed: stays on deepseek
    assert await redis.llen(queue_key("deepseek")) == 1


async def test_cache_is_never_shared_across_providers_or_models(
    settings: Settings, redis: RedisClient, tables: AsyncEngine, fake: FakeLLM
) -> None:
    from pydantic import SecretStr

    from kgworker.llm.cache import cache_key
    from kgworker.llm.extractor import LLMExtractor
    from kgworker.llm.providers import ProviderRegistry, specs_from_settings
    from tests.llm.conftest import chapter, llm_settings, options

    messages = [{"role": "user", "content": "x"}]
    keys = {cache_key(p, m, "v", messages, {}) for p, m in
            [("deepseek", "fake-chat"), ("qwen-local", "fake-chat"), ("deepseek", "other")]}
    assert len(keys) == 3
    s = llm_settings(settings, fake.url, kg_llm_providers=SecretStr(providers_json(fake.url)))
    registry = ProviderRegistry(s, specs_from_settings(s))
    extractor = LLMExtractor(s, registry, redis, tables)
    try:
        for provider in ("deepseek", "qwen-local", "deepseek"):
            result = await extractor.extract(chapter(), options(provider=provider))
            assert result.provider == provider
    finally:
        await extractor.aclose()
    async with tables.connect() as conn:
        rows = (await conn.execute(select(LLMCall.provider, LLMCall.model, LLMCall.status)
                                   .order_by(LLMCall.id))).all()
    assert [tuple(r) for r in rows] == [("deepseek", "fake-chat", "ok"),
                                        ("qwen-local", "qwen-fake", "ok"),
                                        ("deepseek", "fake-chat", "cached")]
