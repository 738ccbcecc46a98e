"""Store outages cost no LLM money and lose no call record (issue 15, item 5).

MySQL is reached through a TCP gate (``tests/support/tcp_gate.py``) that a test shuts and
opens: shut, the port refuses and open connections are cut, as when the server is killed.
The fake LLM is a real HTTP server; its log of 200 answers is what the provider would bill.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.domain.extraction import StoreUnavailable
from kgworker.llm.accounting import CallRecord, MySQLRecorder
from kgworker.llm.cache import CachedAnswer, CacheEntry, MySQLCache
from kgworker.llm.extractor import LLMExtractor
from kgworker.llm.pending import PendingWrites
from kgworker.llm.providers import ProviderRegistry, specs_from_settings
from kgworker.queue.connection import RedisClient
from kgworker.store.mysql import create_engine
from kgworker.store.schema.ours import LLMCacheEntry, LLMCall
from tests.fakellm import FakeLLM
from tests.llm.conftest import CHAPTER_TEXT, MODEL, PROVIDER, chapter, llm_settings, options
from tests.support.tcp_gate import HOST, TcpGate

Make = Callable[..., Awaitable[LLMExtractor]]


@pytest.fixture
async def gate(settings: Settings) -> AsyncIterator[TcpGate]:
    parts = settings.mysql_parts()
    gate = TcpGate(parts.host, parts.port)
    await gate.open()
    yield gate
    await gate.aclose()


@pytest.fixture
async def gated(
    settings: Settings, tables: AsyncEngine, gate: TcpGate
) -> AsyncIterator[AsyncEngine]:
    """The test's migrated database, reached through the gate."""
    engine = create_engine(settings.model_copy(update={"db_host": HOST, "db_port": gate.port}))
    yield engine
    await engine.dispose()


@pytest.fixture
async def make(
    settings: Settings, redis: RedisClient, gated: AsyncEngine, fake: FakeLLM
) -> AsyncIterator[Make]:
    """``await make(**overrides)``: a node's extractor whose MySQL is behind the gate."""
    made: list[LLMExtractor] = []

    async def build(**overrides: Any) -> LLMExtractor:
        s = llm_settings(settings, fake.url, **overrides)
        extractor = LLMExtractor(s, ProviderRegistry(s, specs_from_settings(s)), redis, gated)
        made.append(extractor)
        return extractor

    yield build
    for extractor in made:
        await extractor.aclose()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)


async def calls(engine: AsyncEngine) -> list[tuple[str, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(LLMCall.status, LLMCall.cached).order_by(LLMCall.id))
        return [(status, bool(cached)) for status, cached in rows]


async def count(engine: AsyncEngine, column: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count(column))) or 0)


def paid(fake: FakeLLM) -> int:
    return len(fake.requests(200))


async def test_no_call_starts_while_the_cache_cannot_be_read(
    fake: FakeLLM, make: Make, gate: TcpGate, tables: AsyncEngine
) -> None:
    extractor = await make(kg_llm_mode="three")
    await gate.shut()
    with pytest.raises(StoreUnavailable) as info:
        await extractor.extract(chapter(), options())
    assert info.value.store == "mysql" and "LLM cache not readable" in info.value.reason
    assert fake.log == []  # not one request reached the provider
    await gate.open()
    assert (await extractor.extract(chapter(), options())).llm_calls == 3
    assert paid(fake) == 3

    # the operator turned the cache off: calls go on, their records wait for MySQL
    off = await make(kg_llm_mode="three", kg_llm_cache=False)
    await gate.shut()
    await off.extract(chapter(chapter_id=12), options())
    assert paid(fake) == 6 and off.pending.kept_records == 3
    await gate.open()
    await off.aclose()  # a stopping node writes what it kept
    assert off.pending.kept_records == 0
    assert [c for c in await calls(tables) if not c[1]] == [("ok", False)] * 6


async def test_a_frozen_mysql_is_an_outage_not_a_hang(
    settings: Settings, redis: RedisClient, fake: FakeLLM, gate: TcpGate, gated: AsyncEngine
) -> None:
    """MySQL stops answering without closing anything (SIGSTOP, a lost network path)."""
    s = llm_settings(settings, fake.url, kg_llm_mode="single")
    extractor = LLMExtractor(s, ProviderRegistry(s, specs_from_settings(s)), redis, gated,
                             cache=MySQLCache(gated, timeout=0.5),
                             recorder=MySQLRecorder(gated, timeout=0.5))
    try:
        gate.freeze()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"no answer in 0\.5 s"):
            await extractor.extract(chapter(), options())
        assert time.monotonic() - started < 3 and fake.log == []
        gate.thaw()
        assert (await extractor.extract(chapter(), options())).llm_calls == 1
    finally:
        await extractor.aclose()


async def test_answers_received_in_an_outage_are_kept_and_written_once(
    fake: FakeLLM, make: Make, gate: TcpGate, tables: AsyncEngine
) -> None:
    fake.latency = 0.3
    extractor = await make(kg_llm_mode="single")
    asked = asyncio.create_task(extractor.extract(chapter(), options()))
    await until(lambda: len(fake.log) == 1, 5, "the call reaches the provider")
    await gate.shut()  # MySQL dies while the answer is on its way
    first = await asked
    assert (extractor.pending.kept_answers, extractor.pending.kept_records) == (1, 1)
    assert await calls(tables) == [] and await count(tables, LLMCacheEntry.cache_key) == 0

    # the chapter is redone during the outage, with the names its first attempt added
    roster = {"characters": [c.name for c in first.characters]}
    again = await extractor.extract(chapter(roster=roster), options())
    assert paid(fake) == 1  # answered from memory
    assert [c.name for c in again.characters] == [c.name for c in first.characters]

    await gate.open()
    await until(lambda: extractor.pending.kept_answers + extractor.pending.kept_records == 0,
                15, "kept items written after MySQL is back")
    assert await calls(tables) == [("ok", False), ("cached", True)]
    assert await count(tables, LLMCacheEntry.cache_key) == 2  # its exact key and its redo key
    assert await extractor.pending.flush()  # nothing left: nothing written twice
    assert await calls(tables) == [("ok", False), ("cached", True)]

    other = await make(kg_llm_mode="single")  # another node: the shared cache answers
    await other.extract(chapter(roster=roster), options())
    assert paid(fake) == 1
    assert sum(1 for _, cached in await calls(tables) if not cached) == paid(fake)


async def test_a_redo_with_a_grown_roster_is_answered_from_the_cache(
    fake: FakeLLM, make: Make
) -> None:
    """A chapter redone after a Neo4j outage: its first attempt already added its names to
    the alias table, so the redo's prompt lists them — and still pays nothing."""
    three = {"kg_llm_mode": "three"}
    first = await (await make(**three)).extract(chapter(), options())
    assert paid(fake) == 3
    roster = {"characters": [c.name for c in first.characters], "locations": ["长安城"]}
    redo = await (await make(**three)).extract(chapter(roster=roster), options())
    assert paid(fake) == 3
    assert redo.model_dump(exclude={"llm_calls", "prompt_tokens", "completion_tokens", "cost"}
                           ) == first.model_dump(
        exclude={"llm_calls", "prompt_tokens", "completion_tokens", "cost"})
    # the redo key belongs to that chapter: the same text elsewhere with another roster is asked
    other = chapter(chapter_id=99, title="第11章", roster=roster)
    await (await make(**three)).extract(other, options())
    assert paid(fake) == 4


async def test_paid_calls_equal_an_undisturbed_run_and_the_records(
    fake: FakeLLM, make: Make, gate: TcpGate, tables: AsyncEngine
) -> None:
    """Six chapters in the three-call flow while MySQL goes down and up every 0.25 s; each
    chapter is retried on StoreUnavailable as the handler does, its roster grown."""
    fake.latency, fake.latency_jitter = 0.05, 0.1
    extractor = await make(kg_llm_mode="three")
    outages = 0

    kept = 0

    async def flap() -> None:
        nonlocal kept
        for _ in range(10):
            await asyncio.sleep(0.25)
            await gate.shut()
            await asyncio.sleep(0.25)
            kept = max(kept, extractor.pending.kept_answers)
            await gate.open()

    async def one(i: int) -> None:
        nonlocal outages
        text, roster = f"{CHAPTER_TEXT}\n第{i}段。", {}
        while True:
            try:
                await extractor.extract(chapter(text, chapter_id=100 + i, roster=roster),
                                        options())
                return
            except StoreUnavailable:
                outages += 1
                roster = {"characters": ["张三", "李四", "王五"][: 1 + outages % 3]}
                await asyncio.sleep(0.05)  # the handler's back-off

    flapping = asyncio.create_task(flap())
    await asyncio.gather(*(one(i) for i in range(6)))
    await flapping
    assert outages > 0  # lookups were refused, chapters redone
    await until(lambda: extractor.pending.kept_answers + extractor.pending.kept_records == 0,
                15, "kept items written")
    assert paid(fake) == 6 * 3  # an undisturbed run: three calls per chapter
    rows = await calls(tables)
    assert sum(1 for _, cached in rows if not cached) == paid(fake)
    assert all(status == "ok" for status, cached in rows if not cached)
    assert kept > 0  # some answers arrived while MySQL was down
    async with tables.connect() as conn:
        ids = await conn.scalar(select(func.count(func.distinct(LLMCall.call_id))))
    assert ids == len(rows)


async def test_a_retried_insert_does_not_count_a_call_twice(tables: AsyncEngine) -> None:
    """The first insert committed but its reply was lost: the retry must not add a row."""
    record = CallRecord(provider=PROVIDER, model=MODEL, purpose="single", status="ok",
                        prompt_version="v", prompt_tokens=10)
    recorder = MySQLRecorder(tables)
    await recorder.record([record])
    await recorder.record([record])
    assert await calls(tables) == [("ok", False)]


async def test_kept_items_are_bounded(gate: TcpGate, gated: AsyncEngine) -> None:
    pending = PendingWrites(MySQLCache(gated), MySQLRecorder(gated), max_answers=2,
                            max_records=3)
    await gate.shut()
    entries = [CacheEntry((f"k{i}", f"r{i}"), CachedAnswer(f"a{i}", 1, 1), PROVIDER, MODEL, "v")
               for i in range(4)]
    for entry in entries:
        await pending.store_answer(entry)
    for i in range(5):
        await pending.store_record(CallRecord(PROVIDER, MODEL, "single", "ok", f"v{i}"))
    assert (pending.kept_answers, pending.kept_records) == (2, 3)
    assert (pending.dropped_answers, pending.dropped_records) == (2, 2)
    assert pending.answer(["k0"]) is None and pending.answer(["r1"]) is None  # the oldest
    assert pending.answer(["x", "r3"]) == CachedAnswer("a3", 1, 1)
    await gate.open()
    assert await pending.flush()
    await pending.aclose()
