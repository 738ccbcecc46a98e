"""A chaos-suite worker process: ``python -m tests.chaos.worker_app``.

The production wiring of one node: the real runtime (``run_worker``), the chaishu handler,
the LLM extractor on the providers of the configuration (the fake server), and the
pipeline duties (stale-task recovery, auto-retry). Settings come from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from kgworker.config import load_settings
from kgworker.extract.pipeline import ChaishuHandler
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
        extractor = await create_llm_extractor(settings, redis, engine)
        handler = ChaishuHandler(settings, engine=engine, driver=driver, redis=redis,
                                 extractor_for=lambda _o: extractor)
        stop = asyncio.Event()

        async def duties() -> None:  # a store outage must not end the duties for good
            while not stop.is_set():
                try:
                    await run_duties(settings, redis, engine, stop)
                except Exception:
                    logging.getLogger("chaos").exception("duties crashed; restarting")
                    await asyncio.sleep(0.5)

        duty_task = asyncio.create_task(duties())
        try:
            return await run_worker(settings, handler=handler)
        finally:
            stop.set()
            await duty_task
            await extractor.registry.aclose()
            await driver.close()
            await engine.dispose()
            await redis.aclose()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
