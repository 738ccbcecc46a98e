"""The production path end to end: the gold mini-novel as chaishu rows, the handler built by
``build_handler``, the real runtime (``run_worker`` in-process) and real stores.

(a) rules extractor: the book's main characters become Character nodes; (b) LLM extractor
against the fake server answering from the gold annotations with content faults: one node
per person (aliases merged), no phantom relation ends, alias rows and usage persisted;
(c) a restarted task is answered from the response cache; plus a provider without an API
key failing its chapters with that reason, and two nodes resolving one novel at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.factory import build_handler
from kgworker.chaishu.handler import ChaishuHandler
from kgworker.chaishu.node import run_worker
from kgworker.chaishu.resolve_groups import alias_table, resolve_chapter
from kgworker.config import Settings
from kgworker.domain.extraction import ChapterExtraction
from kgworker.eval.gold import GoldNovel, gold_answerer, load_novel
from kgworker.store.aliases import AliasStore
from kgworker.store.mysql import create_engine
from kgworker.store.schema.ours import ChapterRun, EntityAlias, LLMCall
from tests.fakellm import CONTENT, FakeLLM, FaultPlan
from tests.fakellm.faults import HALLUCINATED_NAME, MISSING_NAME
from tests.pipeline.conftest import (
    PROVIDER,
    Env,
    add_book,
    add_task,
    chapter_rows,
    drive,
    make_job,
    task_row,
)
from tests.support.tasks import restart

NOVEL = load_novel()
RUNTIME: dict[str, Any] = {
    "kg_lease_seconds": 5.0,
    "kg_reaper_interval": 0.2,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_retry_delay": 0.05,
    "kg_shutdown_grace": 2.0,
    "kg_duty_interval": 0.5,
    "kg_cancel_poll_interval": 0.2,
    # one slot: chapters resolve in chapter order, so prompts (rosters) repeat exactly
    "kg_workers_per_provider": 1,
}


def llm_settings(settings: Settings, url: str, *, api_key: str = "test-key") -> Settings:
    providers = [{"name": PROVIDER, "base_url": url, "api_key": api_key, "models": ["gpt-test"]}]
    return settings.model_copy(update={
        **RUNTIME,
        "kg_worker_providers": [PROVIDER],
        "kg_llm_providers": SecretStr(json.dumps(providers)),
        "kg_llm_timeout": 5.0,
        "kg_llm_backoff_base": 0.01,
        "kg_llm_backoff_cap": 0.05,
        "kg_llm_prices": "gpt-test=1/2",
    })


async def add_gold_book(env: Env, novel_id: int, novel: GoldNovel = NOVEL) -> None:
    await add_book(env.db, novel_id, len(novel.chapters), title=novel.title,
                   texts=[chapter.text for chapter in novel.chapters])


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


async def run_task(
    settings: Settings, handler: ChaishuHandler, env: Env, task_id: int, provider: str,
    *, push: bool = True, timeout: float = 90.0,
) -> None:
    """One node until the task is finished (the node also runs the fleet duties)."""
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, handler=handler, stop=stop))
    try:
        if push:
            item = json.dumps({"task_id": task_id, "provider": provider})
            await env.redis.rpush(f"kg:ai_queue:{provider}", item)

        async def finished() -> bool:
            return (await task_row(env.db, task_id)).status in ("completed", "failed")

        await until(finished, timeout, "task finished")
    finally:
        stop.set()
        assert await worker == 0


@pytest.fixture
async def handlers() -> AsyncIterator[list[ChaishuHandler]]:
    """Handlers made by the factory in a test, closed at teardown."""
    made: list[ChaishuHandler] = []
    yield made
    for handler in made:
        await handler.aclose()


async def new_handler(settings: Settings, env: Env, made: list[ChaishuHandler]) -> ChaishuHandler:
    made.append(await build_handler(settings, redis=env.redis))
    return made[-1]


async def characters(env: Env, novel_id: int) -> list[dict[str, Any]]:
    records, _, _ = await env.driver.execute_query(
        "MATCH (c:Character {novel_id: $id}) "
        "OPTIONAL MATCH (c)-[a:APPEARS_IN]->(:Chapter) "
        "RETURN c.name AS name, c.extracted_by AS by, count(a) AS chapters", id=novel_id)
    return [dict(r) for r in records]


def gold_identity(name: str, novel: GoldNovel = NOVEL) -> str | None:
    """The gold character a node name denotes: its canonical name, else an unambiguous alias."""
    registry = novel.registry["character"]
    if name in registry:
        return name
    owners = {canonical for canonical, e in registry.items() if name in e.get("aliases", [])}
    return owners.pop() if len(owners) == 1 else None


async def test_rules_extractor_finds_the_main_characters(
    env: Env, novel_id: int, handlers: list[ChaishuHandler]
) -> None:
    await add_gold_book(env, novel_id)
    tid = await add_task(env.db, novel_id, use_ai=False)
    settings = env.settings.model_copy(update={**RUNTIME, "kg_worker_providers": ["rules"]})
    handler = await new_handler(settings, env, handlers)
    await run_task(settings, handler, env, tid, "rules")

    task = await task_row(env.db, tid)
    assert task.status == "completed"
    rows = await chapter_rows(env.db, tid)
    assert sorted(r.status for r in rows.values()) == ["completed"] * len(NOVEL.chapters)
    assert task.total_entities == sum(r.entities_extracted for r in rows.values()) > 0
    nodes = await characters(env, novel_id)
    assert set(NOVEL.main_characters) <= {n["name"] for n in nodes}
    assert {n["by"] for n in nodes} == {"rule"}
    async with env.db.connect() as conn:
        calls = await conn.scalar(select(func.sum(ChapterRun.llm_calls))
                                  .where(ChapterRun.task_id == tid))
    assert calls == 0


async def test_llm_gold_with_content_faults_merges_aliases(
    env: Env, novel_id: int, handlers: list[ChaishuHandler]
) -> None:
    plan = FaultPlan(rates=dict.fromkeys(CONTENT, 0.3), seed=3)
    async with FakeLLM(answerer=gold_answerer, plan=plan) as fake:
        await add_gold_book(env, novel_id)
        tid = await add_task(env.db, novel_id)
        settings = llm_settings(env.settings, fake.url)
        await run_task(settings, await new_handler(settings, env, handlers), env, tid, PROVIDER)
        faults = [f for r in fake.log for f in r.faults]
        served = [r for r in fake.log if r.status == 200]

    task = await task_row(env.db, tid)
    assert task.status == "completed", task.error_message
    assert {"alias", "missing_end"} <= set(faults)  # the seed does inject what is tested

    # one node per gold character: aliases (沈三, 三爷, 趙鐵生...) merged into one entity
    nodes = await characters(env, novel_id)
    names = [n["name"] for n in nodes]
    identities = [gold_identity(name) for name in names]
    known = [i for i in identities if i is not None]
    assert len(known) == len(set(known)), f"duplicate characters: {sorted(names)}"
    assert set(NOVEL.main_characters) <= set(known)
    assert {MISSING_NAME, HALLUCINATED_NAME}.isdisjoint(names)
    # no phantom relation end: every character node was written by a chapter
    assert all(n["chapters"] > 0 for n in nodes)
    records, _, _ = await env.driver.execute_query(
        "MATCH (a:Character {novel_id: $id})-[r]->(b:Character) "
        "RETURN a.name AS a, b.name AS b, b.novel_id AS nid", id=novel_id)
    assert records and all(r["b"] in names and r["nid"] == novel_id for r in records)

    async with env.db.connect() as conn:
        aliases = {(r.kind, r.alias, r.canonical) for r in await conn.execute(
            select(EntityAlias).where(EntityAlias.novel_id == novel_id,
                                      EntityAlias.entity_type == "character"))}
        runs = (await conn.execute(select(ChapterRun).where(ChapterRun.task_id == tid))).all()
        paid = (await conn.execute(
            select(func.sum(LLMCall.prompt_tokens), func.sum(LLMCall.completion_tokens))
            .where(LLMCall.task_id == tid, LLMCall.status == "ok"))).one()
    # every written character is a table entity; other spellings point at it
    assert set(names) <= {canonical for kind, _, canonical in aliases if kind == "entity"}
    shen = next(name for name in names if gold_identity(name) == "沈青山")
    spellings = {alias for kind, alias, canonical in aliases
                 if kind == "alias" and canonical == shen}
    assert len(spellings & {"沈青山", *NOVEL.registry["character"]["沈青山"]["aliases"]}) >= 2
    # dropped relations are counted per chapter; chaishu's totals count what was written
    dropped = sum(sum((run.dropped or {}).values()) for run in runs)
    assert dropped >= faults.count("missing_end")
    rows = await chapter_rows(env.db, tid)
    assert task.total_relations == sum(r.relations_extracted for r in rows.values())
    assert task.total_relations == sum(run.relations for run in runs)
    # usage of every paid call lands in the chapter runs
    assert sum(run.llm_calls for run in runs) == len(served)
    assert sum(run.prompt_tokens for run in runs) == sum(r.prompt_tokens for r in served)
    assert sum(run.completion_tokens for run in runs) == sum(r.completion_tokens for r in served)
    assert (sum(r.prompt_tokens for r in runs), sum(r.completion_tokens for r in runs)) == paid
    assert sum(run.cost for run in runs) > 0


async def test_restarted_task_is_answered_from_the_cache(
    env: Env, novel_id: int, handlers: list[ChaishuHandler]
) -> None:
    plan = FaultPlan(rates=dict.fromkeys(CONTENT, 0.3), seed=5)
    async with FakeLLM(answerer=gold_answerer, plan=plan) as fake:
        await add_gold_book(env, novel_id)
        tid = await add_task(env.db, novel_id)
        settings = llm_settings(env.settings, fake.url)
        handler = await new_handler(settings, env, handlers)
        await run_task(settings, handler, env, tid, PROVIDER)
        first = sorted(n["name"] for n in await characters(env, novel_id))
        calls = len(fake.log)

        assert await restart(handler, tid)  # graph deleted, chapters pending, re-queued
        assert await characters(env, novel_id) == []
        again = await new_handler(settings, env, handlers)  # another node, same stores
        await run_task(settings, again, env, tid, PROVIDER, push=False)
        assert len(fake.log) == calls  # zero new calls to the provider

    assert (await task_row(env.db, tid)).status == "completed"
    assert sorted(n["name"] for n in await characters(env, novel_id)) == first
    async with env.db.connect() as conn:
        cached = await conn.scalar(select(func.count()).select_from(LLMCall).where(
            LLMCall.task_id == tid, LLMCall.cached.is_(True)))
        runs = (await conn.execute(select(ChapterRun).where(ChapterRun.task_id == tid))).all()
    assert cached == calls
    assert all(run.llm_calls == 0 and run.cost == 0 for run in runs)  # the rerun paid nothing


async def test_provider_without_api_key_fails_chapters_with_the_reason(
    env: Env, novel_id: int, handlers: list[ChaishuHandler]
) -> None:
    await add_book(env.db, novel_id, 2)
    tid = await add_task(env.db, novel_id)
    settings = llm_settings(env.settings, "http://127.0.0.1:9", api_key="")
    handler = await new_handler(settings, env, handlers)
    await drive(handler, make_job(tid))
    task = await task_row(env.db, tid)
    assert task.status == "failed"
    errors = {r.error_message for r in (await chapter_rows(env.db, tid)).values()}
    assert errors == {f"provider {PROVIDER}: no API key"}


def _chapter(*people: tuple[str, list[str]]) -> ChapterExtraction:
    return ChapterExtraction.model_validate({
        "characters": [{"name": name, "aliases": aliases} for name, aliases in people],
        "character_relationships": [
            {"from": people[0][0], "to": people[-1][0], "relation": "朋友"},
            {"from": people[0][0], "to": MISSING_NAME, "relation": "KNOWS"},
        ],
    })


async def test_two_nodes_resolving_one_novel_at_once_agree(db: AsyncEngine, settings: Settings,
                                                           novel_id: int) -> None:
    """Chapters of one book on two nodes at the same moment: each new person gets one
    canonical name (the per-novel lock serialises resolution), rows are never doubled."""
    engines = [create_engine(settings, isolation_level="READ COMMITTED") for _ in range(2)]
    try:
        stores = [AliasStore(engine) for engine in engines]
        for round_ in range(8):
            novel = novel_id + round_
            a = _chapter(("沈青山", ["沈三"]), ("赵铁生", []))
            b = _chapter(("沈三", ["三爷"]), ("趙鐵生", ["赵老大"]))
            left, right = await asyncio.gather(resolve_chapter(stores[0], novel, a),
                                               resolve_chapter(stores[1], novel, b))
            people = {c.name for c in left.characters} | {c.name for c in right.characters}
            assert len(people) == 2, people  # 沈青山/沈三 and 赵铁生/趙鐵生: two people
            assert len(left.character_relationships) == 1  # FRIEND kept, 无名氏 dropped
            assert left.character_relationships[0].relation == "FRIEND"
            assert left.dropped["relation_missing_end"] == 1
            table = await alias_table(stores[1], novel)
            assert table.canonical("character", "三爷") in people
            assert sorted(table.entities("character")) == sorted(people)
            async with db.connect() as conn:
                stored = await conn.scalar(select(func.count()).select_from(EntityAlias)
                                           .where(EntityAlias.novel_id == novel))
            assert stored == len(table.to_rows())  # no row contradicts another one
    finally:
        for engine in engines:
            await engine.dispose()
