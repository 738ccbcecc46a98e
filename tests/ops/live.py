"""A live node for the operations tests: the chaishu handler on the real stores, an
extractor that holds every chapter until the test lets it go, and the HTTP endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from neo4j import AsyncDriver
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.api.server import ApiHandle, start_api
from kgworker.chaishu.factory import compose_handler
from kgworker.config import Settings
from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionOptions
from kgworker.queue.connection import RedisClient
from kgworker.runtime.worker import WorkerNode
from tests.support.fixed import FixedExtractor


class GatedExtractor(FixedExtractor):
    """Each chapter waits for one :meth:`release` (or :meth:`open`) before it is answered,
    so chapters stay pending or running as long as a test needs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Semaphore(0)
        self.waiting = 0
        self.opened = False

    def release(self, chapters: int = 1) -> None:
        for _ in range(chapters):
            self.gate.release()

    def open(self) -> None:
        self.opened = True
        self.release(1000)

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions) -> ChapterExtraction:
        self.waiting += 1
        try:
            if not self.opened:
                await self.gate.acquire()
        finally:
            self.waiting -= 1
        return await super().extract(chapter, options)


@dataclass
class LiveNode:
    node: WorkerNode
    api: ApiHandle
    extractor: GatedExtractor

    @property
    def url(self) -> str:
        return self.api.url


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def live_node(
    settings: Settings, engine: AsyncEngine, redis: RedisClient, driver: AsyncDriver,
    **update: Any,
) -> AsyncIterator[LiveNode]:
    """A node serving ``rules`` with 2 slots and its endpoint on a free port; stopped after."""
    node_settings = settings.model_copy(update={
        "kg_worker_providers": ["rules"], "kg_workers_per_provider": 2,
        "kg_claim_block_seconds": 0.2, "kg_heartbeat_interval": 1.0,
        "kg_shutdown_grace": 0.5, "kg_api_port": 0, "kg_worker_node_name": "live-node",
        **update,
    })
    extractor = GatedExtractor()
    handler = compose_handler(node_settings, engine=engine, redis=redis, driver=driver,
                              extractor=extractor)
    node = WorkerNode(node_settings, handler)
    stop = asyncio.Event()
    running = asyncio.create_task(node.run(stop))
    api = await start_api(node_settings, node=node.ctx, redis=redis, engine=engine)
    try:
        yield LiveNode(node, api, extractor)
    finally:
        stop.set()
        try:
            assert await asyncio.wait_for(running, 30) == 0
        finally:
            await api.close()
