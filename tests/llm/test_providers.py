"""Provider rules of docs/chaishu-compat.md §4: URLs, headers, keys, models, JSON mode, sources."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.llm.errors import ProviderUnavailableError
from kgworker.llm.providers import (
    ANTHROPIC_VERSION,
    CallStyle,
    ChatRequest,
    ProviderClient,
    ProviderRegistry,
    ProviderSpec,
    parse_retry_after,
    specs_from_database,
)
from kgworker.llm.retry import RetryPolicy, backoff_delay

BASE = "http://llm.example.test/base/"


@pytest.mark.parametrize(
    ("name", "style", "url"),
    [
        ("openai", CallStyle.OPENAI, "http://llm.example.test/base/chat/completions"),
        ("deepseek", CallStyle.OPENAI, "http://llm.example.test/base/chat/completions"),
        ("zhipu", CallStyle.OPENAI, "http://llm.example.test/base/chat/completions"),
        ("claude", CallStyle.ANTHROPIC, "http://llm.example.test/base/messages"),
        ("ollama", CallStyle.OLLAMA, "http://llm.example.test/base/api/generate"),
        ("localai", CallStyle.OPENAI, "http://llm.example.test/base/v1/chat/completions"),
        ("openai-compatible", CallStyle.OPENAI, "http://llm.example.test/base/v1/chat/completions"),
        ("my-vllm", CallStyle.OPENAI, "http://llm.example.test/base/v1/chat/completions"),
    ],
)
def test_call_style_and_url(name: str, style: CallStyle, url: str) -> None:
    assert ProviderSpec(name, api_key="k", base_url=BASE).endpoint() == (style, url)


def test_keys_headers_and_skipping(base_settings: Settings) -> None:
    assert ProviderSpec("deepseek", base_url=BASE).unusable_reason() == "no API key"
    assert ProviderSpec("claude").unusable_reason() == "no API key"
    for keyless in ("ollama", "localai", "openai-compatible"):
        assert ProviderSpec(keyless, base_url=BASE).unusable_reason() is None
    assert ProviderSpec("my-vllm").unusable_reason() == "no base_url"
    assert ProviderSpec("openai", api_key="k", is_active=False).unusable_reason() == "inactive"
    with pytest.raises(ProviderUnavailableError, match="no API key"):
        ProviderClient(ProviderSpec("zhipu", base_url=BASE), base_settings)

    claude = ProviderClient(ProviderSpec("claude", api_key="sk-c", base_url=BASE), base_settings)
    assert claude._headers()["x-api-key"] == "sk-c"
    assert claude._headers()["anthropic-version"] == ANTHROPIC_VERSION
    assert "authorization" not in claude._headers()
    bearer = ProviderClient(ProviderSpec("deepseek", api_key="sk-d", base_url=BASE), base_settings)
    assert bearer._headers()["authorization"] == "Bearer sk-d"
    anonymous = ProviderClient(ProviderSpec("openai-compatible", base_url=BASE), base_settings)
    assert "authorization" not in anonymous._headers()


def test_timeouts_per_phase(base_settings: Settings) -> None:
    s = base_settings.model_copy(update={"kg_llm_timeout": 60, "kg_llm_compatible_timeout": 120})
    fast = ProviderClient(ProviderSpec("deepseek", api_key="k", base_url=BASE), s)
    slow = ProviderClient(ProviderSpec("localai", base_url=BASE), s)
    assert fast._client.timeout.read == 60 and slow._client.timeout.read == 120
    assert fast._client.timeout.connect == s.kg_llm_connect_timeout


def test_bodies_use_json_mode_where_offered(base_settings: Settings) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    request = ChatRequest("m", messages, max_tokens=2000, temperature=0.7)

    def body(name: str) -> dict[str, object]:
        return ProviderClient(
            ProviderSpec(name, api_key="k", base_url=BASE), base_settings
        ).build_body(request)

    assert body("deepseek")["response_format"] == {"type": "json_object"}
    assert "response_format" not in body("openai-compatible")
    anthropic = body("claude")
    assert anthropic["system"] == "S" and anthropic["messages"] == [
        {"role": "user", "content": "U"}
    ]
    assert anthropic["max_tokens"] == 2000
    ollama = body("ollama")
    assert ollama["stream"] is False and ollama["format"] == "json" and ollama["system"] == "S"


def test_model_choice(base_settings: Settings) -> None:
    client = ProviderClient(
        ProviderSpec("deepseek", api_key="k", base_url=BASE, models=("a", "b")), base_settings
    )
    assert client.model_for("config-model") == "config-model"
    assert client.model_for(None) == "a"
    bare = ProviderClient(ProviderSpec("ollama", base_url=BASE), base_settings)
    with pytest.raises(ProviderUnavailableError, match="no model"):
        bare.model_for(None)


async def test_ai_providers_rows_win_over_configuration(
    settings: Settings, tables: AsyncEngine
) -> None:
    async with tables.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ai_providers"
                " (name, display_name, api_key, base_url, models, is_active)"
                " VALUES (:n, :d, :k, :u, :m, :a)"
            ),
            [
                {
                    "n": "deepseek",
                    "d": "DeepSeek",
                    "k": "sk-row",
                    "u": BASE,
                    "m": json.dumps(["deepseek-chat"]),
                    "a": 1,
                },
                {
                    "n": "ollama",
                    "d": "Ollama",
                    "k": "",
                    "u": BASE,
                    "m": json.dumps(["qwen"]),
                    "a": 0,
                },
            ],
        )
    configured = json.dumps(
        [
            {
                "name": "deepseek",
                "base_url": "http://other.test",
                "api_key": "sk-cfg",
                "models": ["x"],
            },
            {"name": "localai", "base_url": BASE, "models": ["llama"]},
        ]
    )
    s = settings.model_copy(update={"kg_llm_providers": SecretStr(configured)})
    registry = await ProviderRegistry.load(s, tables)
    try:
        assert sorted(registry.usable()) == ["deepseek", "localai"]  # ollama row is inactive
        deepseek = registry.get("DeepSeek")
        assert deepseek.spec.api_key == "sk-row" and deepseek.model_for(None) == "deepseek-chat"
        assert registry.get("deepseek") is deepseek  # one long-lived client per provider
        with pytest.raises(ProviderUnavailableError, match="inactive"):
            registry.get("ollama")
        with pytest.raises(ProviderUnavailableError, match="not configured"):
            registry.get("nobody")
    finally:
        await registry.aclose()


async def test_missing_table_falls_back_to_configuration(mysql_engine: AsyncEngine) -> None:
    assert await specs_from_database(mysql_engine) is None


def test_retry_after_and_backoff() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None
    rng = random.Random(1)
    policy = RetryPolicy(max_attempts=5, base=1.0, cap=4.0)
    delays = [backoff_delay(n, policy, None, rng) for n in range(1, 6) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(delays) > 3.0 and min(delays) < 0.5  # full jitter spreads over the range
    assert backoff_delay(1, policy, 7.5, rng) == 7.5  # Retry-After is a floor
