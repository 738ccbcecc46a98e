"""A pipeline worker process for tests: ``python -m tests.pipeline.worker_app``.

The real runtime (``run_worker``) with the chaishu handler and the fixed extractor (the
runtime also runs the handler's pipeline duties). Settings come from the environment; test knobs:

- ``KGT_DELAY``: seconds the extractor sleeps per chapter;
- every graph write is counted: ``HINCRBY kgt:graph_writes {chapter_id} 1`` (and a line
  in ``KGT_WRITES_FILE`` when set, which survives a Redis that loses its data);
- ``KGT_CRASH_CHAPTER``: chapter_number after whose graph commit (before the MySQL commit)
  the process kills itself with SIGKILL — once per test (``SET kgt:crashed NX``);
- ``KGT_MEET``: each node's chapters wait after their graph write (up to 30 s) until that
  many nodes have written one (``SADD kgt:working``): a test can make sure every node takes
  part in a book, however the nodes' start-up times differ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

from kgworker.chaishu.factory import compose_handler
from kgworker.chaishu.node import run_worker
from kgworker.config import load_settings
from kgworker.queue.connection import create_redis
from kgworker.store.chapters import ChapterClaimed
from kgworker.store.graph import create_driver
from kgworker.store.mysql import create_engine
from tests.support.fixed import FixedExtractor


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    settings = load_settings(dotenv_path=None)
    delay = float(os.environ.get("KGT_DELAY", "0"))
    crash_chapter = int(os.environ.get("KGT_CRASH_CHAPTER", "0"))
    writes_file = os.environ.get("KGT_WRITES_FILE", "")
    meet = int(os.environ.get("KGT_MEET", "0"))

    async def run() -> int:
        redis = create_redis(settings)
        engine = create_engine(settings, isolation_level="READ COMMITTED")
        driver = create_driver(settings)
        extractor = FixedExtractor(delay=delay)

        async def written(claim: ChapterClaimed) -> None:
            if writes_file:  # survives a Redis that loses its data
                with open(writes_file, "a", encoding="ascii") as out:
                    out.write(f"{claim.chapter_id}\n")
            await redis.hincrby("kgt:graph_writes", str(claim.chapter_id), 1)
            if claim.chapter_number == crash_chapter and await redis.set(
                "kgt:crashed", "1", nx=True
            ):
                os.kill(os.getpid(), signal.SIGKILL)
            if meet:
                await redis.sadd("kgt:working", settings.kg_worker_node_name)
                deadline = time.monotonic() + 30
                while await redis.scard("kgt:working") < meet and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)

        handler = compose_handler(settings, engine=engine, driver=driver, redis=redis,
                                  extractor=extractor, on_graph_written=written)
        try:
            return await run_worker(settings, handler=handler)
        finally:
            await driver.close()
            await engine.dispose()
            await redis.aclose()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
