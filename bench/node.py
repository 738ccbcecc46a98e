"""One kgworker node for the fleet benchmarks: ``python -m bench.node``.

What ``kgworker run`` runs (``run_worker`` under uvloop, the chaishu pipeline with the
LLM extractor, the pipeline duties), configured by the environment, plus two bench knobs:

- ``KGB_LAG_FILE``: a loop-lag probe in this process. Every ``KGB_LAG_INTERVAL`` s
  (default 0.05) it sleeps and records how late it woke up; one line per sample
  ``<unix time> <lag seconds>`` is appended to the file (flushed every second).
- ``KGB_GRAPH=null``: a graph sink that writes nothing (to see what Neo4j costs).

The handler comes from ``kgworker.chaishu.factory.build_handler`` (the production path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import Any

from kgworker.chaishu.handler import ChaishuHandler
from kgworker.chaishu.node import run_worker
from kgworker.config import Settings, load_settings
from kgworker.domain.graph_rows import ChapterGraph
from kgworker.store.graph_writer import WriteResult


class NullGraph:
    """A :class:`~kgworker.store.graph_writer.GraphSink` that writes nothing."""

    async def ensure_schema(self) -> None:
        return None

    async def write_chapter(self, graph: ChapterGraph) -> WriteResult:
        return WriteResult(relations_written=graph.relation_count)

    async def delete_task(self, task_id: int, novel_id: int) -> int:
        return 0


async def build_handler(settings: Settings) -> ChaishuHandler:
    """The production handler; ``KGB_GRAPH=null`` swaps the graph store for one that writes
    nothing (the store ceiling without Neo4j)."""
    from kgworker.chaishu.factory import build_handler as build

    return await build(settings, graph=NullGraph() if os.environ.get("KGB_GRAPH") == "null"
                       else None)


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
    try:
        return await run_worker(settings, handler=handler)
    finally:
        duties_stop.set()
        for task in background:
            with contextlib.suppress(Exception):
                await task
        await handler.aclose()


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
