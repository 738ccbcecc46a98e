"""Every fault class of the fake provider, through LLMExtractor on the real Redis and MySQL.

Format faults must be repaired into the clean answer; content faults must be pruned (and
counted) or passed on in a form entity resolution can merge; transport faults must be
retried (honouring Retry-After) or, for 400/401/403/content filter, fail fast with the
provider's own message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.extraction import ChapterExtraction, ExtractionError
from kgworker.keys import fail_key
from kgworker.queue.connection import RedisClient
from kgworker.store.schema.ours import LLMCall
from tests.fakellm import AnswerRequest, FakeLLM, default_answerer
from tests.fakellm.faults import HALLUCINATED_NAME, MISSING_NAME
from tests.llm.conftest import PROVIDER, MakeExtractor, chapter, options

PEOPLE = {"张三", "李四", "王五"}
RELATIONS = {("张三", "李四", "KNOWS"), ("李四", "王五", "KNOWS"), ("王五", "张三", "KNOWS")}


def people(result: ChapterExtraction) -> set[str]:
    return {c.name for c in result.characters}


def relations(result: ChapterExtraction) -> set[tuple[str, str, str]]:
    return {(r.source, r.target, r.relation) for r in result.character_relationships}


async def test_clean_answer_baseline(fake: FakeLLM, make_extractor: MakeExtractor) -> None:
    result = await (await make_extractor()).extract(chapter(), options())
    assert people(result) == PEOPLE
    assert [p.name for p in result.locations] == ["长安城"]
    assert [o.name for o in result.organizations] == ["青云门"]
    assert relations(result) == RELATIONS
    assert result.dropped == {}
    assert result.llm_calls == 1 and result.prompt_tokens > 0 and result.completion_tokens > 0


@pytest.mark.parametrize(
    "faults",
    [
        "fence",
        "preamble",
        "think",
        "trailing_comma",
        "single_quotes",
        ("fence", "preamble", "think", "trailing_comma"),
    ],
)
async def test_format_fault_is_repaired(
    faults: Any, fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    extractor = await make_extractor()
    fake.plan.script(faults)
    result = await extractor.extract(chapter(), options())
    assert people(result) == PEOPLE
    assert relations(result) == RELATIONS
    assert len(fake.log) == 1  # repaired, not re-asked
    assert sum(extractor.repairs.values()) >= 1


async def test_truncated_answer_splits_the_chunk(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    extractor = await make_extractor()
    fake.plan.script("truncate")
    result = await extractor.extract(chapter(), options())
    assert fake.log[0].faults == ["truncate"]
    assert len(fake.log) >= 3  # the cut answer, then one call per piece (2-3, overlapping)
    assert all(r.status == 200 and not r.faults for r in fake.log[1:])
    assert extractor.repairs["split_on_length"] == 1
    assert people(result) == PEOPLE


async def test_truncation_that_never_ends_fails_with_a_reason(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    extractor = await make_extractor()
    fake.plan.rates["truncate"] = 1.0
    with pytest.raises(ExtractionError, match="cut at max_tokens") as info:
        await extractor.extract(chapter(), options())
    assert not info.value.retryable


async def test_empty_answer_is_asked_again(fake: FakeLLM, make_extractor: MakeExtractor) -> None:
    extractor = await make_extractor()
    fake.plan.script("empty")
    result = await extractor.extract(chapter(), options())
    assert people(result) == PEOPLE
    assert len(fake.log) == 2


async def test_unrepairable_answer_fails_the_chapter(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    extractor = await make_extractor()
    fake.plan.script("empty", "empty")
    with pytest.raises(ExtractionError, match=r"unusable answer \(empty answer\)") as info:
        await extractor.extract(chapter(), options())
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("hallucinated", "entity_not_in_text"),
        ("missing_end", "relation_missing_end"),
        ("off_schema", "relation_type_off_schema"),
        ("duplicate", "duplicate"),
    ],
)
async def test_content_fault_is_pruned_and_counted(
    fault: str, reason: str, fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    fake.plan.script(fault)
    result = await (await make_extractor()).extract(chapter(), options())
    assert people(result) == PEOPLE
    assert relations(result) == RELATIONS
    assert result.dropped.get(reason) == 1
    assert HALLUCINATED_NAME not in people(result)
    assert all(MISSING_NAME not in rel for rel in relations(result))
    if fault == "off_schema":
        assert result.dropped["category_off_schema"] == 1


async def test_traditional_variant_is_kept_for_resolution(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    fake.plan.script("traditional")
    result = await (await make_extractor()).extract(chapter(), options())
    # 張三 is not in the text literally, but its simplified form is: kept, not pruned as
    # hallucinated; merging it with 张三 is entity resolution's job.
    assert len(people(result)) == 3
    assert len(people(result) & PEOPLE) == 2
    assert len(result.character_relationships) == 3
    assert result.dropped == {}


async def test_alias_instead_of_canonical_name_is_kept(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    def with_aliases(request: AnswerRequest) -> dict[str, Any]:
        full = default_answerer(request)
        for person in full["characters"]:
            person["aliases"] = {"张三": ["三哥"]}.get(person["name"], [])
        return full

    fake.answerer = with_aliases
    fake.plan.script("alias")
    text = chapter().content + "\n李四叹道：“三哥，等等我。”"
    result = await (await make_extractor()).extract(chapter(text), options())
    names = people(result)
    assert len(names) == 3
    assert {"李四", "王五"} <= names
    assert result.dropped == {}


async def test_reversed_relation_keeps_the_pair(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    fake.plan.script("reversed")
    result = await (await make_extractor()).extract(chapter(), options())
    # The direction cannot be checked without the truth (the eval measures it); for the
    # symmetric KNOWS the pair is what matters.
    assert {frozenset(r[:2]) for r in relations(result)} == {frozenset(r[:2]) for r in RELATIONS}


@pytest.mark.parametrize("style", [PROVIDER, "claude", "ollama", "openai-compatible"])
async def test_429_is_retried_after_retry_after(
    style: str, fake: FakeLLM, make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    fake.plan.retry_after = 0.4
    fake.plan.script("http_429")
    extractor = await make_extractor(name=style)
    result = await extractor.extract(chapter(), options(provider=style))
    assert people(result) == PEOPLE
    assert [r.status for r in fake.log] == [429, 200]
    assert fake.log[1].t - fake.log[0].t >= 0.4
    assert {r.style for r in fake.log} == {
        "openai"
        if "openai" in style or style == PROVIDER
        else "anthropic"
        if style == "claude"
        else "ollama"
    }


@pytest.mark.parametrize("fault", ["http_500", "http_503", "timeout", "reset"])
async def test_transient_fault_is_retried(
    fault: str, fake: FakeLLM, make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    fake.plan.hang_seconds = 2.0
    fake.plan.retry_after = 0.05
    fake.plan.script(fault)
    extractor = await make_extractor(kg_llm_timeout=0.3)
    result = await extractor.extract(chapter(), options())
    assert people(result) == PEOPLE
    assert len(fake.log) == 2
    assert await redis.get(fail_key(PROVIDER)) is None  # the call succeeded: no breaker count


async def test_retries_are_bounded(
    fake: FakeLLM, make_extractor: MakeExtractor, tables: AsyncEngine
) -> None:
    fake.plan.rates["http_500"] = 1.0
    extractor = await make_extractor(kg_llm_max_attempts=3)
    with pytest.raises(ExtractionError, match="injected 500") as info:
        await extractor.extract(chapter(), options())
    assert info.value.retryable
    assert len(fake.log) == 3
    async with tables.connect() as conn:
        row = (
            await conn.execute(select(LLMCall.status, LLMCall.retries, LLMCall.http_status))
        ).one()
    assert tuple(row) == ("error", 2, 500)


@pytest.mark.parametrize(
    ("fault", "message", "counts_for_breaker"),
    [
        ("http_400", "injected 400", False),
        ("http_401", "injected 401", True),
        ("http_403", "injected 403", True),
        ("content_filter", "content_filter", False),
    ],
)
async def test_fatal_fault_fails_fast_with_the_provider_message(
    fault: str,
    message: str,
    counts_for_breaker: bool,
    fake: FakeLLM,
    make_extractor: MakeExtractor,
    redis: RedisClient,
) -> None:
    fake.plan.script(fault)
    started = time.monotonic()
    with pytest.raises(ExtractionError, match=message) as info:
        await (await make_extractor()).extract(chapter(), options())
    assert not info.value.retryable
    assert len(fake.log) == 1
    assert time.monotonic() - started < 1.0
    assert (await redis.get(fail_key(PROVIDER)) is not None) is counts_for_breaker


async def test_claude_content_filter_fails_fast(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    fake.plan.script("content_filter")
    with pytest.raises(ExtractionError, match="content filter") as info:
        await (await make_extractor(name="claude")).extract(chapter(), options(provider="claude"))
    assert not info.value.retryable


async def test_hidden_capacity_answers_429_and_retries_recover(
    fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    fake.capacity = 2
    fake.latency = 0.1
    extractor = await make_extractor(kg_rate_cooldown_seconds=0.05, kg_llm_max_attempts=10)
    results = await asyncio.gather(
        *(extractor.extract(chapter(chapter_id=i), options(use_cache=False)) for i in range(6))
    )
    assert all(people(r) == PEOPLE for r in results)
    assert len(fake.requests(429)) >= 1  # above K concurrent requests the provider refuses
    assert len(fake.requests(200)) == 6
