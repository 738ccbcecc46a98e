"""Burst mode: a node that works until its queues are empty, then stops with exit 0."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.keys import ProviderKeys
from kgworker.queue.connection import RedisClient
from kgworker.runtime.burst import SETTLE_SECONDS
from kgworker.runtime.handler import Job, SimpleHandler
from kgworker.runtime.worker import WorkerNode
from kgworker.store.schema.chaishu import KnowledgeGraphTask

from .conftest import Book, rules_book

FAST = {"KG_CLAIM_BLOCK_SECONDS": "0.3", "KG_HEARTBEAT_INTERVAL": "1", "KG_REAPER_INTERVAL": "0.5",
        "KG_DUTY_INTERVAL": "0.5", "KG_SHUTDOWN_GRACE": "5"}


async def test_run_burst_stops_once_both_books_are_done(
    worker_env: dict[str, str], redis: RedisClient, mysql_engine: AsyncEngine, chaishu: Book,
    novel_ids: list[int],
) -> None:
    tasks = [await rules_book(mysql_engine, novel, 3) for novel in novel_ids]
    for task_id in tasks:
        await redis.rpush("kg:ai_queue:rules", json.dumps({"task_id": task_id,
                                                           "provider": "rules"}))
    env = {**worker_env, **FAST, "KG_WORKER_PROVIDERS": "rules", "KG_API_ENABLED": "false",
           "KG_WORKER_NODE_NAME": "burst-node"}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", "run", "--burst", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail(f"kgworker run --burst did not stop:\n{out.decode()[-3000:]}")
    took = time.monotonic() - started
    log = out.decode()
    assert proc.returncode == 0, log[-3000:]
    async with mysql_engine.connect() as conn:
        statuses = (await conn.execute(select(KnowledgeGraphTask.status).where(
            KnowledgeGraphTask.id.in_(tasks)))).scalars().all()
    assert statuses == ["completed", "completed"], log[-3000:]
    assert "burst: nothing left to do on rules: stopping" in log
    keys = ProviderKeys.for_provider("rules")
    assert [await redis.llen(keys.queue), await redis.hlen(keys.open),
            await redis.hlen(keys.claims)] == [0, 0, 0]
    assert not await redis.exists("kg:nodes:burst-node"), "a clean stop leaves the registry"
    assert took < 60, took


async def test_burst_waits_for_work_that_arrives_and_for_held_claims(
    settings: Settings, redis: RedisClient,
) -> None:
    """In-process, with a generic handler: work pushed while the node runs is done, and the
    node does not stop while it still holds a job."""
    node_settings = settings.model_copy(update={
        "kg_worker_providers": ["rules"], "kg_burst": True, "kg_claim_block_seconds": 0.2,
        "kg_api_enabled": False, "kg_worker_node_name": "burst-inproc",
    })
    release = asyncio.Event()
    done: list[int] = []

    async def work(job: Job) -> None:
        if job.task_id == 1:
            await release.wait()  # held: the queues are empty, the node is not idle
        done.append(job.task_id)

    node = WorkerNode(node_settings, SimpleHandler(work))
    await redis.rpush("kg:ai_queue:rules", json.dumps({"task_id": 1, "provider": "rules"}))
    running = asyncio.create_task(node.run())
    deadline = time.monotonic() + 20
    while not node.ctx.claims:
        assert time.monotonic() < deadline, "the first job was never claimed"
        await asyncio.sleep(0.05)
    # a negative check needs a wait: past the settle period, a held claim keeps it running
    await asyncio.sleep(SETTLE_SECONDS + 1)
    assert not running.done()
    await redis.rpush("kg:ai_queue:rules", json.dumps({"task_id": 2, "provider": "rules"}))
    while 2 not in done:
        assert time.monotonic() < deadline, "the job pushed later was not done"
        await asyncio.sleep(0.05)
    assert not running.done()
    release.set()
    assert await asyncio.wait_for(running, 20) == 0
    assert sorted(done) == [1, 2]
