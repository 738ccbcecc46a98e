"""Fixtures of the LLM tests: the fake provider, settings pointing at it, an extractor on the
real stores (Redis for limits and breaker, MySQL for accounting and the cache)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.domain.extraction import ChapterInput, ExtractionOptions
from kgworker.llm.extractor import LLMExtractor
from kgworker.llm.providers import ProviderRegistry, specs_from_settings
from kgworker.queue.connection import RedisClient
from kgworker.store.migrate import upgrade
from tests.fakellm import FakeLLM

ROOT_DIR = Path(__file__).resolve().parents[2]
PROVIDER = "deepseek"
MODEL = "fake-chat"

#: A chapter the default fake answerer reads: three characters, a place, a sect, relations.
CHAPTER_TEXT = (
    "清晨，张三说：“李四，我们今天去长安城。”\n"
    "李四笑道：“好，王五也一起去。”\n"
    "王五问：“张三，你真的要加入青云门吗？”\n"
    "张三说：“是的，李四和王五都知道。”"
)


def provider_json(url: str, name: str = PROVIDER, key: str = "test-key") -> str:
    return json.dumps([{"name": name, "base_url": url, "api_key": key, "models": [MODEL]}])


def llm_settings(settings: Settings, url: str, name: str = PROVIDER, **overrides: Any) -> Settings:
    """Settings with one provider at ``url`` and test-sized timeouts and backoff."""
    values: dict[str, Any] = {
        "kg_llm_providers": SecretStr(provider_json(url, name)),
        "kg_llm_timeout": 1.0,
        "kg_llm_compatible_timeout": 1.0,
        "kg_llm_backoff_base": 0.01,
        "kg_llm_backoff_cap": 0.05,
        "kg_rate_cooldown_seconds": 0.2,
        "kg_llm_prices": f"{MODEL}=1/2",
    }
    values.update(overrides)
    return settings.model_copy(update=values)


def chapter(text: str = CHAPTER_TEXT, chapter_id: int = 11, **kw: Any) -> ChapterInput:
    values: dict[str, Any] = {
        "novel_id": 1,
        "chapter_id": chapter_id,
        "chapter_number": chapter_id,
        "title": f"第{chapter_id}章",
        "content": text,
        "task_id": 7,
    }
    values.update(kw)
    return ChapterInput(**values)


def options(**kw: Any) -> ExtractionOptions:
    return ExtractionOptions(**{"provider": PROVIDER, **kw})


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@pytest.fixture
async def tables(mysql_engine: AsyncEngine) -> AsyncEngine:
    """The migrated schema (chaishu tables and ours) in this test's fresh database."""
    await upgrade(mysql_engine)
    return mysql_engine


MakeExtractor = Callable[..., Awaitable[LLMExtractor]]


@pytest.fixture
async def make_extractor(
    settings: Settings, redis: RedisClient, tables: AsyncEngine, fake: FakeLLM
) -> AsyncIterator[MakeExtractor]:
    """``await make_extractor(**settings_overrides)``: an extractor on the real stores."""
    made: list[LLMExtractor] = []

    async def make(**overrides: Any) -> LLMExtractor:
        s = llm_settings(settings, fake.url, **overrides)
        registry = ProviderRegistry(s, specs_from_settings(s))
        extractor = LLMExtractor(s, registry, redis, tables)
        made.append(extractor)
        return extractor

    yield make
    for extractor in made:
        await extractor.aclose()
