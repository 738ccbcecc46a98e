"""Response cache and per-call accounting, on the real MySQL.

A restarted node (a new extractor, new HTTP clients, same database) must answer a chapter
it already paid for from the cache with zero calls to the provider; every call leaves a
``kgworker_llm_calls`` row with tokens, latency, retries and cost; totals group by
chapter, task and provider.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config.specs import PriceTable
from kgworker.llm import prompts
from kgworker.llm.accounting import summarize
from kgworker.llm.cache import cache_key
from kgworker.store.schema.ours import LLMCacheEntry, LLMCall
from tests.fakellm import FakeLLM
from tests.llm.conftest import MODEL, PROVIDER, MakeExtractor, chapter, options


async def _rows(engine: AsyncEngine) -> list[tuple[str, bool, int, int, float]]:
    query = select(
        LLMCall.status,
        LLMCall.cached,
        LLMCall.prompt_tokens,
        LLMCall.completion_tokens,
        LLMCall.cost,
    ).order_by(LLMCall.id)
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(query)).all()]  # type: ignore[misc]


@pytest.mark.parametrize("mode", ["single", "three"])
async def test_restarted_run_is_answered_from_the_cache(
    mode: str, fake: FakeLLM, make_extractor: MakeExtractor, tables: AsyncEngine
) -> None:
    first = await (await make_extractor(kg_llm_mode=mode)).extract(chapter(), options())
    paid = len(fake.log)
    assert paid == (1 if mode == "single" else 3)
    assert first.llm_calls == paid
    restarted = await make_extractor(kg_llm_mode=mode)  # a new node: new clients, same MySQL
    second = await restarted.extract(chapter(), options())
    assert len(fake.log) == paid  # zero new calls
    assert second.model_dump(
        exclude={"llm_calls", "prompt_tokens", "completion_tokens", "cost"}
    ) == first.model_dump(exclude={"llm_calls", "prompt_tokens", "completion_tokens", "cost"})
    assert (second.llm_calls, second.prompt_tokens, second.cost) == (0, 0, 0.0)
    rows = await _rows(tables)
    assert [r[0] for r in rows] == ["ok"] * paid + ["cached"] * paid
    async with tables.connect() as conn:
        hits = (await conn.execute(select(func.sum(LLMCacheEntry.hits)))).scalar_one()
    assert hits == paid
    if mode == "three":
        assert any(c.is_protagonist for c in first.characters)  # call 2 was applied


async def test_no_cache_bypasses_the_cache(fake: FakeLLM, make_extractor: MakeExtractor) -> None:
    extractor = await make_extractor()
    await extractor.extract(chapter(), options())
    await extractor.extract(chapter(), options(use_cache=False))
    assert len(fake.log) == 2
    off = await make_extractor(kg_llm_cache=False)
    await off.extract(chapter(), options())
    assert len(fake.log) == 3


async def test_key_covers_model_prompt_version_and_parameters() -> None:
    messages = [{"role": "user", "content": "x"}]
    base = cache_key(PROVIDER, MODEL, prompts.PROMPT_VERSION, messages, {"max_tokens": 10})
    assert base == cache_key(
        PROVIDER.upper(), MODEL, prompts.PROMPT_VERSION, messages, {"max_tokens": 10}
    )
    assert base != cache_key(
        PROVIDER, "other", prompts.PROMPT_VERSION, messages, {"max_tokens": 10}
    )
    assert base != cache_key(PROVIDER, MODEL, "v0", messages, {"max_tokens": 10})
    assert base != cache_key(PROVIDER, MODEL, prompts.PROMPT_VERSION, messages, {"max_tokens": 11})
    assert base != cache_key("claude", MODEL, prompts.PROMPT_VERSION, messages, {"max_tokens": 10})


async def test_unusable_answers_are_not_cached(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    extractor = await make_extractor(kg_llm_parse_retries=0)
    fake.plan.script("empty")
    with pytest.raises(Exception, match="unusable answer"):
        await extractor.extract(chapter(), options())
    await extractor.extract(chapter(), options())
    assert len(fake.log) == 2  # the garbled answer was not replayed from the cache


async def test_accounting_rows_and_totals(
    fake: FakeLLM, make_extractor: MakeExtractor, tables: AsyncEngine
) -> None:
    extractor = await make_extractor(kg_llm_backoff_base=0.01)
    fake.plan.retry_after = 0.05
    fake.plan.script("http_503")  # one retry on the first call
    a = await extractor.extract(chapter(chapter_id=1), options())
    b = await extractor.extract(chapter(chapter_id=2, task_id=8), options())
    by_chapter = await summarize(tables, "chapter")
    assert [(r["task_id"], r["chapter_id"], r["calls"], r["retries"]) for r in by_chapter] == [
        (7, 1, 1, 1),
        (8, 2, 1, 0),
    ]
    first = by_chapter[0]
    assert first["prompt_tokens"] == a.prompt_tokens == fake.log[1].prompt_tokens
    assert first["completion_tokens"] == a.completion_tokens == fake.log[1].completion_tokens
    # KG_LLM_PRICES: 1 USD per million prompt tokens, 2 per million completion tokens.
    assert first["cost"] == pytest.approx((a.prompt_tokens + 2 * a.completion_tokens) / 1e6)
    assert a.cost == pytest.approx(first["cost"])
    by_task = await summarize(tables, "task", task_id=8)
    assert [(r["task_id"], r["calls"]) for r in by_task] == [(8, 1)]
    by_provider = await summarize(tables, "provider")
    assert len(by_provider) == 1
    assert by_provider[0]["provider"] == PROVIDER and by_provider[0]["model"] == MODEL
    assert by_provider[0]["prompt_tokens"] == a.prompt_tokens + b.prompt_tokens
    assert by_provider[0]["avg_latency_ms"] >= 0


def test_price_table() -> None:
    table = PriceTable.parse("deepseek-chat=0.27/1.10; *=1/2")
    assert table.cost("deepseek-chat", 1_000_000, 1_000_000) == pytest.approx(1.37)
    assert table.cost("unknown", 500_000, 0) == pytest.approx(0.5)
    assert PriceTable.parse("").cost("x", 10, 10) == 0.0
    with pytest.raises(ValueError, match="KG_LLM_PRICES"):
        PriceTable.parse("gpt-4o=2.5")
