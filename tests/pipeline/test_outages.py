"""A store outage is not the chapter's fault (issue 15): the book completes afterwards.

The node talks to Neo4j through a TCP gate the test shuts (the shared server keeps
running for the other tests). The outage lasts far longer than a chapter's attempts would
have lasted when a failed graph write cost an attempt (the driver's own retry time is
scaled down from 30 s to 2 s, as the outage is scaled down from minutes to seconds).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text

from kgworker.chaishu.factory import compose_handler
from kgworker.chaishu.node import run_worker
from kgworker.store.graph import create_driver
from tests.pipeline.conftest import PROVIDER, Env, add_book, add_task, chapter_rows, task_row
from tests.support.fixed import FixedExtractor
from tests.support.tcp_gate import TcpGate

FAST: dict[str, Any] = {
    "kg_worker_providers": [PROVIDER],
    "kg_workers_per_provider": 2,
    "kg_lease_seconds": 3.0,
    "kg_reaper_interval": 0.3,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_retry_delay": 0.05,
    "kg_duty_interval": 0.5,
    "kg_cancel_poll_interval": 0.2,
    "kg_chapter_max_attempts": 3,
}
OUTAGE_SECONDS = 15.0


async def _completed(env: Env, task_id: int) -> int:
    return sum(r.status == "completed" for r in (await chapter_rows(env.db, task_id)).values())


@pytest.mark.slow
async def test_a_long_neo4j_outage_fails_no_chapter(env: Env, novel_id: int) -> None:
    ids = await add_book(env.db, novel_id, 10)
    tid = await add_task(env.db, novel_id)
    port = int(env.settings.neo4j_uri.rsplit(":", 1)[1])
    gate = TcpGate("127.0.0.1", port)
    await gate.open()
    try:
        settings = env.settings.model_copy(update={
            **FAST, "neo4j_uri": f"bolt://127.0.0.1:{gate.port}"})
        # the driver's own retry of a write (30 s by default) scaled down with the outage
        driver = create_driver(settings, max_transaction_retry_time=2.0)
        handler = compose_handler(settings, engine=env.db, redis=env.redis, driver=driver,
                                  extractor=FixedExtractor(delay=0.2))
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, handler=handler, stop=stop))
        try:
            await env.redis.rpush(f"kg:ai_queue:{PROVIDER}",
                                  f'{{"task_id": {tid}, "provider": "{PROVIDER}"}}')
            deadline = time.monotonic() + 60
            while await _completed(env, tid) < 3:
                assert time.monotonic() < deadline, "the book did not start"
                await asyncio.sleep(0.1)
            await gate.shut()
            outage_ends = time.monotonic() + OUTAGE_SECONDS
            while time.monotonic() < outage_ends:
                rows = await chapter_rows(env.db, tid)
                assert not any(r.status == "failed" for r in rows.values())
                running = sum(r.status == "running" for r in rows.values())
                assert running <= FAST["kg_workers_per_provider"]  # nothing new piles up
                await asyncio.sleep(0.2)
            await gate.open()
            deadline = time.monotonic() + 60
            while (await task_row(env.db, tid)).status != "completed":
                assert time.monotonic() < deadline, await chapter_rows(env.db, tid)
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            assert await asyncio.wait_for(worker, 30) == 0
            await driver.close()
    finally:
        await gate.aclose()
    rows = await chapter_rows(env.db, tid)
    assert set(rows) == set(ids) and {r.status for r in rows.values()} == {"completed"}
    task = await task_row(env.db, tid)
    assert (task.completed_chapters, task.failed_chapters) == (10, 0)
    async with env.db.connect() as conn:
        attempts = [int(a) for (a,) in await conn.execute(text(
            "SELECT attempts FROM kgworker_chapter_claims WHERE task_id = :t"), {"t": tid})]
    assert attempts == [1] * 10  # the outage spent no attempt of any chapter
