"""A production-like node for the fallback test: ``python -m tests.llm.fallback_worker``.

The real runtime with the chaishu handler, ``LLMExtractor`` for AI providers and the rules
extractor for ``rules``, plus the pipeline duties (which run the fallback mover). Settings
come from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from kgworker.config import load_settings
from kgworker.extract.models import ExtractionOptions, Extractor
from kgworker.extract.pipeline import ChaishuHandler
from kgworker.extract.rules import RulesExtractor
from kgworker.llm.extractor import create_llm_extractor
from kgworker.queue.connection import create_redis
from kgworker.runtime.worker import run_worker
from kgworker.store.duties import run_duties
from kgworker.store.graph import create_driver
from kgworker.store.mysql import create_engine


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    settings = load_settings(dotenv_path=None)

    async def run() -> int:
        redis = create_redis(settings)
        engine = create_engine(settings, isolation_level="READ COMMITTED")
        driver = create_driver(settings)
        llm = await create_llm_extractor(settings, redis, engine)
        rules = RulesExtractor()

        def extractor_for(options: ExtractionOptions) -> Extractor:
            return rules if options.provider == "rules" else llm

        handler = ChaishuHandler(settings, engine=engine, driver=driver, redis=redis,
                                 extractor_for=extractor_for)
        stop = asyncio.Event()
        duties = asyncio.create_task(run_duties(settings, redis, engine, stop))
        try:
            return await run_worker(settings, handler=handler)
        finally:
            stop.set()
            await duties
            await llm.aclose()
            await driver.close()
            await engine.dispose()
            await redis.aclose()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
