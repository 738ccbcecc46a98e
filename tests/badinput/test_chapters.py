"""Bad chapters through the real worker, the LLM extractor and the fake model: empty,
large, binary, emoji, mixed scripts, and chapter ids that do not exist. The worker never
dies; each bad chapter ends completed (maybe with nothing found) or failed with a reason;
the good chapters of the same book are not affected."""

from __future__ import annotations

import asyncio
import json
import random
import time

from sqlalchemy import update

from kgworker.chaishu.node import run_worker
from kgworker.domain.extraction import ChapterInput, ExtractionError, ExtractionOptions
from kgworker.llm.extractor import LLMExtractor
from kgworker.llm.providers import ProviderRegistry, specs_from_settings
from kgworker.store.schema.chaishu import KnowledgeGraphTask
from tests.fakellm import FakeLLM
from tests.llm.conftest import CHAPTER_TEXT, llm_settings
from tests.pipeline.conftest import PROVIDER, Env, add_book, add_task, chapter_rows, task_row
from tests.pipeline.test_workers import FAST

rng = random.Random(3)
BINARY = bytes(rng.randrange(256) for _ in range(4000)).decode("latin-1") + "\x00\x01\x1b[31m"
MEGABYTE = ("张三说：“李四，走。”" + "The quick brown fox. " * 3 + "Привет, мир. ")
MEGABYTE = (MEGABYTE * (1_000_000 // len(MEGABYTE.encode()) + 1))[:800_000]
BAD = {
    "empty": "",
    "blank": " \n\t\u3000 ",
    "large (60 KB, the TEXT column's size)": MEGABYTE.encode()[:60_000].decode("utf-8", "ignore"),
    "binary": BINARY,
    "emoji": "😀🐉🔥" * 300 + "张三说：“🐉来了。”",
    "mixed scripts": "清晨，张三说：“Bonjour, Алексей! مرحبا こんにちは 안녕하세요 שלום”" * 50,
    "rtl and zero-width": "\u202e张三\u200b说：“李\u200d四”" * 100,
}


async def test_bad_chapters_end_with_a_state_and_good_ones_complete(env: Env,
                                                                   novel_id: int) -> None:
    texts = [CHAPTER_TEXT, *BAD.values(), CHAPTER_TEXT]
    ids = await add_book(env.db, novel_id, len(texts), texts=texts)
    ghost = novel_id + 900  # a chapter id no chapter row has
    tid = await add_task(env.db, novel_id, chapter_ids=json.dumps([*ids, ghost]))
    async with FakeLLM() as fake:
        settings_ = llm_settings(env.settings, fake.url, name=PROVIDER, **FAST,
                                 kg_workers_per_provider=3, kg_chunk_tokens=4000)
        registry = ProviderRegistry(settings_, specs_from_settings(settings_))
        extractor = LLMExtractor(settings_, registry, env.redis, env.db)
        handler = env.handler(extractor)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings_, handler=handler, stop=stop))
        try:
            await env.redis.rpush(f"kg:ai_queue:{PROVIDER}",
                                  json.dumps({"task_id": tid, "provider": PROVIDER}))
            deadline = time.monotonic() + 180
            while (await task_row(env.db, tid)).status not in ("completed", "failed"):
                assert not worker.done(), "the worker stopped"
                assert time.monotonic() < deadline, "task not finished"
                await asyncio.sleep(0.3)
            assert not worker.done()
        finally:
            stop.set()
            assert await asyncio.wait_for(worker, 60) == 0
            await registry.aclose()
    rows = await chapter_rows(env.db, tid)
    by_name = dict(zip(["good-1", *BAD, "good-2"], ids, strict=True))
    for name, cid in by_name.items():
        row = rows[cid]
        assert row.status in ("completed", "failed"), (name, row.status)
        if row.status == "failed":
            assert row.error_message, name
    assert rows[by_name["good-1"]].status == rows[by_name["good-2"]].status == "completed"
    assert rows[by_name["good-1"]].entities_extracted > 0
    assert ghost not in rows or rows[ghost].status in ("skipped", "failed")
    task = await task_row(env.db, tid)
    states = [r.status for r in rows.values()]
    assert task.completed_chapters == states.count("completed")
    assert task.failed_chapters == states.count("failed")
    # the good chapters' people are in the graph
    got, _, _ = await env.driver.execute_query(
        "MATCH (c:Character {novel_id: $n}) RETURN c.name", n=novel_id)
    assert {"张三", "李四", "王五"} <= {r[0] for r in got}


async def test_task_naming_only_missing_chapters(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 2)
    tid = await add_task(env.db, novel_id, chapter_ids=json.dumps([novel_id + 500]))
    async with env.db.begin() as conn:
        await conn.execute(update(KnowledgeGraphTask).where(KnowledgeGraphTask.id == tid)
                           .values(status="created"))
    settings_ = env.settings.model_copy(update=FAST)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings_, handler=env.handler(), stop=stop))
    try:
        await env.redis.rpush(f"kg:ai_queue:{PROVIDER}",
                              json.dumps({"task_id": tid, "provider": PROVIDER}))
        deadline = time.monotonic() + 30
        while (await task_row(env.db, tid)).status in ("created", "running", "pending"):
            assert time.monotonic() < deadline and not worker.done()
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
    assert (await task_row(env.db, tid)).status in ("completed", "failed")
    assert await env.redis.llen(f"kg:ai_queue:{PROVIDER}") == 0


async def test_one_megabyte_chapter_through_the_extractor(env: Env) -> None:
    """1 MB does not fit chaishu's ``chapters.content`` (TEXT, 64 KB), so it goes to the
    extractor directly: chunked, every chunk asked, merged; no error, nothing lost."""
    assert len(MEGABYTE.encode()) >= 1_000_000
    async with FakeLLM() as fake:
        settings_ = llm_settings(env.settings, fake.url, name=PROVIDER, kg_chunk_tokens=20_000)
        registry = ProviderRegistry(settings_, specs_from_settings(settings_))
        extractor = LLMExtractor(settings_, registry, env.redis, env.db)
        try:
            chapter = ChapterInput(novel_id=1, chapter_id=1, chapter_number=1, title="大",
                                   content=MEGABYTE, task_id=1)
            try:
                result = await extractor.extract(chapter, ExtractionOptions(provider=PROVIDER))
            except ExtractionError as exc:  # refusing is fine, with a reason
                assert exc.reason  # noqa: PT017
            else:
                assert "张三" in {c.name for c in result.characters}
                assert result.llm_calls >= 1  # repeated chunks are answered from the cache
        finally:
            await registry.aclose()
