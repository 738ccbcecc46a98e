"""Worker processes for ``bench/queue.py``: one system each, the same tiny handler.

``python bench/queue_workers.py SYSTEM MODE CONCURRENCY REDIS_URL``; SYSTEM is kgworker,
saq, arq or arq-fast (``poll_delay=0.01``). MODE ``noop``: INCR ``bench:done``; ``sleep``:
INCR ``bench:started``, sleep ``BENCH_SLEEP`` s, INCR ``bench:done``; every job with a
``t`` argument also RPUSHes its pickup latency (s) to ``bench:lat``. The process sets
``bench:ready`` when its worker is about to start.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is first on sys.path and bench/queue.py would shadow the
# standard library's queue module (which redis-py imports): drop it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import asyncio
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

QUEUE = "bench"


def _handler(redis: Redis, mode: str) -> Any:
    sleep = float(os.environ.get("BENCH_SLEEP", "60"))

    async def work(t: float | None) -> None:
        if t is not None:
            await redis.rpush("bench:lat", time.time() - t)
        if mode == "sleep":
            await redis.incr("bench:started")
            await asyncio.sleep(sleep)
        await redis.incr("bench:done")

    return work


async def run_kgworker(redis: Redis, mode: str, concurrency: int, url: str) -> None:
    from kgworker.chaishu.node import run_worker
    from kgworker.config import load_settings
    from kgworker.runtime.handler import Job, SimpleHandler

    parts = urlsplit(url)
    settings = load_settings(
        {
            "redis_host": parts.hostname,
            "redis_port": parts.port or 6379,
            "redis_db": int(parts.path.lstrip("/") or 0),
            "db_host": "unused",
            "kg_worker_providers": QUEUE,
            "kg_workers_per_provider": concurrency,
            "kg_max_processes_per_provider": concurrency,
            "kg_max_total_processes": concurrency,
            "log_level": "WARNING",
        },
        environ={},
        dotenv_path=None,
    )
    work = _handler(redis, mode)

    async def job(j: Job) -> None:
        await work(j.payload.get("t"))

    await redis.set("bench:ready", 1)
    await run_worker(settings, handler=SimpleHandler(job))


async def run_saq(redis: Redis, mode: str, concurrency: int, url: str) -> None:
    from saq import Queue, Worker

    work = _handler(redis, mode)

    async def job(ctx: Any, *, t: float | None = None) -> None:
        await work(t)

    queue = Queue.from_url(url, name=QUEUE)
    worker = Worker(queue, functions=[("job", job)], concurrency=concurrency)  # type: ignore[list-item]
    await redis.set("bench:ready", 1)
    await worker.start()


async def run_arq(redis: Redis, mode: str, concurrency: int, url: str, poll: float) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    work = _handler(redis, mode)

    async def job(ctx: Any, t: float | None = None) -> None:
        await work(t)

    worker = Worker(
        functions=[func(job, name="job")],
        redis_settings=RedisSettings.from_dsn(url),
        max_jobs=concurrency,
        poll_delay=poll,
        handle_signals=True,
        job_timeout=300,
    )
    await redis.set("bench:ready", 1)
    await worker.async_run()


async def main(system: str, mode: str, concurrency: int, url: str) -> None:
    redis = Redis.from_url(url)
    if system == "kgworker":
        await run_kgworker(redis, mode, concurrency, url)
    elif system == "saq":
        await run_saq(redis, mode, concurrency, url)
    elif system == "arq":
        await run_arq(redis, mode, concurrency, url, 0.5)
    elif system == "arq-fast":
        await run_arq(redis, mode, concurrency, url, 0.01)
    else:
        raise SystemExit(f"unknown system {system}")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
