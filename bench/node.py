"""One kgworker node for the fleet benchmarks: ``python -m bench.node``.

What ``kgworker run`` runs (``run_worker`` under uvloop, the chaishu pipeline with the
LLM extractor, the pipeline duties), configured by the environment, plus two bench knobs:

- ``KGB_LAG_FILE``: a loop-lag probe in this process. Every ``KGB_LAG_INTERVAL`` s
  (default 0.05) it sleeps and records how late it woke up; one line per sample
  ``<unix time> <lag seconds>`` is appended to the file (flushed every second).
- ``KGB_GRAPH=null``: a graph sink that writes nothing (to see what Neo4j costs).

When ``kgworker.extract.pipeline_factory.create_chaishu_handler`` exists it builds the
handler (the production path); otherwise the same parts are assembled here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import Any

from kgworker.config import Settings, load_settings
from kgworker.domain.graph_rows import ChapterGraph
from kgworker.runtime.handler import JobHandler
from kgworker.runtime.worker import run_worker
from kgworker.store.graph_writer import WriteResult


class NullGraph:
    """A :class:`~kgworker.store.graph_writer.GraphSink` that writes nothing."""

    async def ensure_schema(self) -> None:
        return None

    async def write_chapter(self, graph: ChapterGraph) -> WriteResult:
        return WriteResult(relations_written=graph.relation_count)

    async def delete_task(self, task_id: int, novel_id: int) -> int:
        return 0


async def build_handler(settings: Settings) -> JobHandler:
    null_graph = os.environ.get("KGB_GRAPH") == "null"
    if not null_graph:
        try:
            from kgworker.extract.pipeline_factory import create_chaishu_handler
        except ImportError:
            pass
        else:
            return await create_chaishu_handler(settings)
    from kgworker.extract.pipeline import ChaishuHandler
    from kgworker.llm.extractor import create_llm_extractor
    from kgworker.queue.connection import create_redis
    from kgworker.store.graph import create_driver
    from kgworker.store.mysql import create_engine

    redis = create_redis(settings)
    engine = create_engine(settings, isolation_level="READ COMMITTED")
    driver = None if null_graph else create_driver(settings)
    extractor = await create_llm_extractor(settings, redis, engine)

    async def close_driver() -> None:
        if driver is not None:
            await driver.close()

    handler = ChaishuHandler(
        settings, engine=engine, driver=driver, redis=redis,
        extractor_for=lambda _options: extractor,
        graph=NullGraph() if null_graph else None,
        closers=[redis.aclose, engine.dispose, close_driver, extractor.registry.aclose],
    )
    return handler


async def lag_probe(path: str, interval: float, stop: asyncio.Event) -> None:
    buffer: list[str] = []
    flushed = time.monotonic()
    with open(path, "a", encoding="ascii") as out:
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = time.monotonic() - before - interval
            buffer.append(f"{time.time():.3f} {max(0.0, lag):.6f}\n")
            if time.monotonic() - flushed >= 1.0:
                out.writelines(buffer)
                out.flush()
                buffer.clear()
                flushed = time.monotonic()
        out.writelines(buffer)


async def run(settings: Settings) -> int:
    handler = await build_handler(settings)
    duties_stop = asyncio.Event()
    background: list[asyncio.Task[Any]] = []
    lag_file = os.environ.get("KGB_LAG_FILE")
    if lag_file:
        interval = float(os.environ.get("KGB_LAG_INTERVAL", "0.05"))
        background.append(asyncio.create_task(lag_probe(lag_file, interval, duties_stop)))
    if not hasattr(handler, "run_duties"):
        from kgworker.extract.pipeline import ChaishuHandler
        from kgworker.store.duties import run_duties

        if isinstance(handler, ChaishuHandler):
            background.append(asyncio.create_task(
                run_duties(settings, handler.redis, handler.engine, duties_stop)))
    try:
        return await run_worker(settings, handler=handler)
    finally:
        duties_stop.set()
        for task in background:
            with contextlib.suppress(Exception):
                await task
        closer = getattr(handler, "aclose", None)
        if closer is not None:
            await closer()


def main() -> int:
    logging.basicConfig(level=os.environ.get("KG_LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    settings = load_settings(dotenv_path=None)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(settings))
    return int(uvloop.run(run(settings)))


if __name__ == "__main__":
    sys.exit(main())
