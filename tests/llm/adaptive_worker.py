"""One node of the adaptive-concurrency fleet: ``--concurrency`` chapters at a time through
``LLMExtractor`` until SIGTERM/SIGINT, so the demand on the provider is always above its
hidden capacity. Settings (provider, ``KG_ADAPTIVE_*``) come from the environment; prints one JSON
line ``{"chapters": n, "errors": n}``. Used by the tests and by ``python -m bench adaptive``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from kgworker.config import load_settings
from kgworker.domain.extraction import ChapterInput, ExtractionError, ExtractionOptions
from kgworker.llm.extractor import LLMExtractor
from kgworker.llm.providers import ProviderRegistry, specs_from_settings
from kgworker.queue.connection import create_redis

TEXT = "张三说：“李四，走吧。”李四笑道：“好。”"


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    settings = load_settings(environ=os.environ, dotenv_path=None)
    redis = create_redis(settings)
    registry = ProviderRegistry(settings, specs_from_settings(settings))
    extractor = LLMExtractor(settings, registry, redis)  # no MySQL: no cache, no accounting
    options = ExtractionOptions(provider=args.provider, use_cache=False)
    done = errors = 0
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)

    async def loop(slot: int) -> None:
        nonlocal done, errors
        number = 0
        while not stop.is_set():
            number += 1
            chapter = ChapterInput(1, slot * 1_000_000 + number, number, "章", TEXT, 1)
            try:
                await extractor.extract(chapter, options)
                done += 1
            except ExtractionError:
                errors += 1

    print("ready", flush=True)
    await asyncio.gather(*(loop(i) for i in range(args.concurrency)))
    print(json.dumps({"chapters": done, "errors": errors}), flush=True)
    await extractor.aclose()
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--provider", default="deepseek")
    asyncio.run(main(parser.parse_args()))
