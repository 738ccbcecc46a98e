"""Extraction quality on the gold mini-novel (``python -m bench quality``).

``--via offline`` (default) is ``kgworker eval``: chunking, the production answer parser and
validator, the fake server's fault injector and entity resolution, without HTTP.

``--via server`` runs the real LLM path: the fake LLM server on loopback answering from the
gold annotations (``kgworker.eval.gold.gold_answerer``) with its seeded fault injector, and
the production ``LLMExtractor`` (HTTP client, retries, breaker and limiter in Redis, chunk
split on ``finish_reason = length``, re-asks), then resolution and the same scoring. Needs
Redis (REDIS_* or ``scripts/services env``); no MySQL (no cache, no accounting).
Parse recovery there = the share of faulted requests whose chapter still completed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kgworker.config import Settings, load_settings  # noqa: E402
from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionOptions  # noqa: E402
from kgworker.eval.gold import gold_answerer, load_novel  # noqa: E402
from kgworker.eval.metrics import score  # noqa: E402
from kgworker.eval.quality import (  # noqa: E402
    CONTENT_FAULTS,
    FORMAT_FAULTS,
    SuiteResult,
    _targets,
    evaluate,
    render_text,
)
from kgworker.eval.runner import run_novel  # noqa: E402


def _settings() -> Settings:
    environ = dict(os.environ)
    if not environ.get("REDIS_HOST"):
        out = subprocess.run(
            [str(ROOT / "scripts" / "services"), "env"], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            environ[key.strip()] = (shlex.split(value) or [""])[0]
    return load_settings(environ=environ, dotenv_path=None)


class _Counting:
    """Wraps an extractor to know which fake-server requests served which chapter."""

    def __init__(self, inner: Any, fake: Any) -> None:
        self.inner, self.fake = inner, fake
        self.failed_requests: list[Any] = []

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions) -> ChapterExtraction:
        before = len(self.fake.log)
        try:
            return await self.inner.extract(chapter, options)  # type: ignore[no-any-return]
        except Exception:
            self.failed_requests += self.fake.log[before:]
            raise


async def server_suite(
    name: str,
    seed: int = 1,
    format_rate: float = 0.1,
    content_rate: float = 0.3,
    base: Settings | None = None,
) -> SuiteResult:
    from kgworker.llm.extractor import LLMExtractor
    from kgworker.llm.providers import ProviderRegistry, specs_from_settings
    from kgworker.queue.connection import create_redis
    from tests.fakellm import FakeLLM
    from tests.fakellm.faults import FaultPlan

    faults = {"clean": (), "format": FORMAT_FAULTS, "content": CONTENT_FAULTS}[name]
    rate = format_rate if name == "format" else content_rate
    plan = FaultPlan(rates=dict.fromkeys(faults, rate), seed=seed)
    plan.script(*faults)
    provider = f"quality-{uuid.uuid4().hex[:8]}"
    novel = load_novel()
    async with FakeLLM(answerer=gold_answerer, plan=plan) as fake:
        base = base or _settings()
        providers = [{"name": provider, "base_url": fake.url, "models": ["gold"]}]
        settings = base.model_copy(
            update={
                "kg_llm_providers": SecretStr(json.dumps(providers)),
                "kg_llm_backoff_base": 0.01,
                "kg_llm_backoff_cap": 0.05,
            }
        )
        redis = create_redis(settings)
        registry = ProviderRegistry(settings, specs_from_settings(settings))
        extractor = _Counting(LLMExtractor(settings, registry, redis), fake)
        try:
            run = await run_novel(extractor, novel, ExtractionOptions(provider=provider))
        finally:
            await registry.aclose()
            keys = [k async for k in redis.scan_iter(match=f"*{provider}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
    seen: dict[str, int] = {}
    lost: dict[str, int] = {}
    for record in fake.log:
        for fault in record.faults:
            seen[fault] = seen.get(fault, 0) + 1
    for record in extractor.failed_requests:
        for fault in record.faults:
            lost[fault] = lost.get(fault, 0) + 1
    result = SuiteResult(
        name,
        score(novel, run),
        recovery={
            f: round(1 - lost.get(f, 0) / n, 4) for f, n in seen.items() if f in FORMAT_FAULTS
        },
        faults_seen=dict(sorted(seen.items())),
        calls=len(fake.log),
        prompt_tokens=sum(r.prompt_tokens for r in fake.log),
        completion_tokens=sum(r.completion_tokens for r in fake.log),
    )
    result.failures = _targets(result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--via", choices=("offline", "server"), default="offline")
    parser.add_argument("--suite", action="append", choices=("clean", "format", "content", "rules"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format-rate", type=float, default=0.1)
    parser.add_argument("--content-rate", type=float, default=0.3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    suites = tuple(args.suite or ("clean", "format", "content", "rules"))
    options = {
        "seed": args.seed,
        "format_rate": args.format_rate,
        "content_rate": args.content_rate,
    }
    if args.via == "offline":
        results = asyncio.run(evaluate(suites, **options))
    else:
        if "rules" in suites:
            print("note: the rules suite has no server path; run it --via offline", file=sys.stderr)

        async def run_all() -> list[SuiteResult]:
            return [
                await server_suite(s, args.seed, args.format_rate, args.content_rate)
                for s in suites
                if s != "rules"
            ]

        results = asyncio.run(run_all())
    if args.json:
        print(json.dumps([r.summary() for r in results], ensure_ascii=False, indent=1))
    else:
        print(render_text(results))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
