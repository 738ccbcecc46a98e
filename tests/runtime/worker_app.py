"""A worker process for the runtime tests: ``python -m tests.runtime.worker_app``.

Settings come from the environment (KG_*, REDIS_*). The handler does real, observable work
in Redis, chosen with KGT_* variables:

- every job: ``HINCRBY kgt:done {provider}:{task_id} 1`` (exactly-once checks), after
  ``RPUSH kgt:started {task_id}`` (who started what, in which order);
- an instrumented in-process concurrency counter; the maxima per provider and in total are
  kept in ``kgt:max:{node}`` (limits are per node);
- ``KGT_SLEEP`` seconds of sleep per job; ``KGT_KILL_TASK`` = a task id whose job kills the
  process with SIGKILL (a poison task); ``KGT_FAIL_TIMES`` = raise that many times per task;
  ``KGT_SLOW_TASKS`` = comma list of task ids whose job never ends by itself;
  ``KGT_FILL`` = jobs wait (up to 60 s) until that many run at once in this process, then
  all go on: a test can prove its slots fill without depending on how fast claims come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections import Counter

from kgworker.chaishu.node import run_worker
from kgworker.config import load_settings
from kgworker.queue.connection import create_redis
from kgworker.runtime.handler import Job, SimpleHandler

RAISE_TO = """
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
"""


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s",
    )
    settings = load_settings(dotenv_path=None)
    sleep = float(os.environ.get("KGT_SLEEP", "0"))
    kill_task = int(os.environ.get("KGT_KILL_TASK", "0"))
    fail_times = int(os.environ.get("KGT_FAIL_TIMES", "0"))
    slow_tasks = {int(t) for t in os.environ.get("KGT_SLOW_TASKS", "").split(",") if t}
    fill = int(os.environ.get("KGT_FILL", "0"))
    node = settings.kg_worker_node_name

    async def run() -> int:
        redis = create_redis(settings)
        current: Counter[str] = Counter()
        highest: Counter[str] = Counter()
        filled = asyncio.Event()
        if not fill:
            filled.set()

        def enter(provider: str) -> list[str]:
            current[provider] += 1
            current["total"] += 1
            changed = []
            for key in (provider, "total"):
                if current[key] > highest[key]:
                    highest[key] = current[key]
                    changed.append(key)
            if current["total"] >= fill:
                filled.set()
            return changed

        async def work(job: Job) -> None:
            changed = enter(job.provider)
            try:
                for key in changed:  # only ever raised: the writes of two jobs may cross
                    await redis.eval(RAISE_TO, 1, f"kgt:max:{node}", key, highest[key])
                await redis.rpush("kgt:started", job.task_id)
                if not filled.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(filled.wait(), 60)
                if job.task_id == kill_task:
                    os.kill(os.getpid(), signal.SIGKILL)
                if fail_times:
                    n = await redis.hincrby("kgt:attempts", str(job.task_id), 1)
                    if n <= fail_times:
                        raise RuntimeError(f"failing on purpose ({n})")
                if job.task_id in slow_tasks:
                    await asyncio.sleep(3600)
                if sleep:
                    await asyncio.sleep(sleep)
                else:
                    await asyncio.sleep(0)
                await redis.hincrby("kgt:done", f"{job.provider}:{job.task_id}", 1)
            finally:
                current[job.provider] -= 1
                current["total"] -= 1

        try:
            return await run_worker(settings, handler=SimpleHandler(work))
        finally:
            await redis.aclose()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
