"""Redis killed without persistence mid-run (issue 15): nothing is lost, nothing doubled.

One task running, one queued behind it, one paused — on a provider that is not the
default config's, so a recovery that guessed the provider would show. Redis (a private
one, no AOF, no snapshots) is killed with kill -9 and started again empty. The node must
notice the loss, rebuild the queue from MySQL and finish both tasks on their own provider;
the paused one stays paused; no chapter's graph is written twice. The time from Redis
answering again to the first re-claim is printed (``-s``) and written to the test's
artifacts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from kgworker.config import Settings
from kgworker.keys import ProviderKeys
from kgworker.queue.connection import create_redis
from kgworker.store import task_queues
from tests.chaos.servers import HOST, RedisServer
from tests.pipeline.conftest import Env, add_book, add_task, set_task, task_row
from tests.support.nodes import Procs

ROOT = Path(__file__).resolve().parents[2]
OWN = "qwen-local"  #: the tasks' queue; the default config names "openai"
FAST: dict[str, Any] = {
    "kg_worker_providers": ["openai", OWN],
    "kg_workers_per_provider": 1,
    "kg_lease_seconds": 5.0,
    "kg_reaper_interval": 0.5,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_duty_interval": 0.5,
    "kg_recovery_grace": 3.0,
    "kg_cancel_poll_interval": 0.2,
}


class VolatileRedis(RedisServer):
    """A Redis that keeps nothing on disk: a restart comes back empty."""

    def command(self) -> list[str]:
        return [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", HOST,
                "--port", str(self.port), "--dir", str(self.home), "--appendonly", "no",
                "--save", "", "--daemonize", "no", "--protected-mode", "no"]

    def crash_and_start(self) -> None:
        """kill -9, then start again on the same port: empty."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None
        self.start()


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[VolatileRedis]:
    with VolatileRedis(tmp_path / "redis") as server:
        yield server  # type: ignore[misc]


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return found


async def test_redis_without_persistence_loses_nothing(
    env: Env, novel_id: int, volatile_redis: VolatileRedis, worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    running_ids = await add_book(env.db, novel_id, 10)
    await add_book(env.db, novel_id + 1000, 3)
    await add_book(env.db, novel_id + 2000, 2)
    running = await add_task(env.db, novel_id)
    waiting = await add_task(env.db, novel_id + 1000)
    paused = await add_task(env.db, novel_id + 2000)
    settings: Settings = env.settings.model_copy(update={
        **FAST, "redis_host": "127.0.0.1", "redis_port": volatile_redis.port, "redis_db": 0,
        "kg_progress_channel": f"kg:task_progress:{uuid.uuid4().hex}"})
    redis = create_redis(settings)
    writes = tmp_path / "writes.txt"
    nodes = Procs(settings, {k: v for k, v in worker_env.items() if not k.startswith("KG_")},
                  tmp_path)
    queue = ProviderKeys.for_provider(OWN)
    try:
        nodes.start("loss-a", kgt_delay=0.6, kgt_writes_file=writes)
        await redis.rpush(queue.queue, json.dumps({"task_id": running, "provider": OWN}))

        async def started() -> bool:
            rows = await _chapters(env, running)
            return rows.count("completed") >= 2

        await _until(started, 60, "the running task under way")
        await redis.rpush(queue.queue, json.dumps({"task_id": waiting, "provider": OWN}))
        await task_queues.record(env.db, [(paused, "openai")])  # seen, then paused
        await set_task(env.db, paused, status="paused")

        async def seen() -> bool:
            return await task_queues.provider_of(env.db, waiting) == OWN

        await _until(seen, 30, "the queued task seen by the fleet")
        assert (await task_row(env.db, waiting)).status == "created"  # still queued

        await redis.aclose()
        volatile_redis.crash_and_start()
        back = time.monotonic()
        redis = create_redis(settings)

        async def reclaimed() -> bool:
            return bool(await redis.hlen(queue.claims))

        await _until(reclaimed, 60, "a re-claim after the loss")
        first_reclaim = time.monotonic() - back
        report = f"redis loss: first re-claim {first_reclaim:.2f} s after Redis answered again"
        print(report)
        (ROOT / "artifacts").mkdir(exist_ok=True)
        (ROOT / "artifacts" / "redis-loss.txt").write_text(report + "\n", encoding="utf-8")

        async def both_done() -> bool:
            return all([(await task_row(env.db, t)).status == "completed"
                        for t in (running, waiting)])

        await _until(both_done, 120, "both tasks completed after the loss")
        assert (await task_row(env.db, paused)).status == "paused"
        assert nodes.stop_all() == [0]
    finally:
        nodes.stop_all(timeout=5)
        await redis.aclose()
    counts: dict[int, int] = {}
    for line in writes.read_text(encoding="ascii").split():
        counts[int(line)] = counts.get(int(line), 0) + 1
    assert counts and set(counts.values()) == {1}, counts  # no chapter written twice
    assert set(running_ids) <= set(counts)
    async with env.db.connect() as conn:
        producers = {str(p) for (p,) in await conn.execute(text(
            "SELECT DISTINCT provider FROM kgworker_chapter_runs WHERE task_id IN (:a, :b)"),
            {"a": running, "b": waiting})}
    assert producers == {OWN}  # each task stayed on its own provider


async def _chapters(env: Env, task_id: int) -> list[str]:
    async with env.db.connect() as conn:
        return [str(s) for (s,) in await conn.execute(text(
            "SELECT status FROM knowledge_graph_chapter_status WHERE kg_task_id = :t"),
            {"t": task_id})]
