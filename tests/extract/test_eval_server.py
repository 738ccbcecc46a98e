"""The real LLM path on the gold novel: fake HTTP server answering from the gold data,
the production LLMExtractor (Redis breaker and limiter), resolution, scoring."""

from __future__ import annotations

import pytest

from bench.quality import server_suite
from kgworker.config import Settings


@pytest.mark.parametrize("suite", ["clean", "format", "content"])
async def test_quality_targets_through_the_fake_server(settings: Settings, suite: str) -> None:
    result = await server_suite(suite, seed=1, base=settings)
    assert result.failures == [], result.summary()
    if suite != "content":
        assert result.report.entities.f1 == result.report.relations.f1 == 1.0
    if suite == "format":
        assert set(result.recovery) >= {"fence", "truncate", "empty", "single_quotes"}
