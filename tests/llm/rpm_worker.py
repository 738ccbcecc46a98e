"""One "node" of the fleet test: hammers one provider through LLMExtractor until a deadline.

``python -m tests.llm.rpm_worker --start EPOCH --until EPOCH --concurrency N``; settings
(stores, provider, limits) come from the environment. Prints ``done <calls> <errors>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from kgworker.config import load_settings
from kgworker.domain.extraction import ChapterInput, ExtractionError, ExtractionOptions
from kgworker.llm.extractor import LLMExtractor
from kgworker.llm.providers import ProviderRegistry, specs_from_settings
from kgworker.queue.connection import create_redis

TEXT = "张三说：“李四，走吧。”李四笑道：“好。”"


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(environ=os.environ, dotenv_path=None)
    redis = create_redis(settings)
    registry = ProviderRegistry(settings, specs_from_settings(settings))
    extractor = LLMExtractor(settings, registry, redis)  # no MySQL: no cache, no accounting
    options = ExtractionOptions(provider=args.provider, use_cache=False)
    calls = errors = 0

    async def loop(slot: int) -> None:
        nonlocal calls, errors
        number = 0
        while time.time() < args.until:
            number += 1
            chapter = ChapterInput(1, slot * 100000 + number, number, "章", TEXT, 1)
            try:
                await extractor.extract(chapter, options)
                calls += 1
            except ExtractionError:
                errors += 1

    await asyncio.sleep(max(0.0, args.start - time.time()))
    await asyncio.gather(*(loop(i) for i in range(args.concurrency)))
    print(f"done {calls} {errors}", flush=True)
    await registry.aclose()
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--until", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--provider", default="deepseek")
    asyncio.run(main(parser.parse_args()))
