"""Reconciliation from the durable side (issue 15): what Redis lost is rebuilt from MySQL.

A queued task whose item vanished goes back on the queue it was seen on — never another
provider's — while paused, cancelled, never-seen, held and already-queued tasks are left
alone; on a healthy fleet under load reconciliation finds nothing to do.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from kgworker.chaishu.duties import run_duties_once
from kgworker.chaishu.node import run_worker
from kgworker.chaishu.reconcile import Reconciler
from kgworker.domain.clock import chaishu_now
from kgworker.keys import ProviderKeys
from kgworker.queue.provider_queue import ProviderQueue
from kgworker.store import task_queues
from tests.pipeline.conftest import PROVIDER, Env, add_book, add_task, set_task, task_row
from tests.support.fixed import FixedExtractor

OTHER = "qwen-local"  #: a queue other than the default config's provider
FAST: dict[str, Any] = {
    "kg_worker_providers": [PROVIDER],
    "kg_workers_per_provider": 3,
    "kg_lease_seconds": 3.0,
    "kg_reaper_interval": 0.3,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_duty_interval": 0.5,
    "kg_recovery_grace": 3.0,
    "kg_cancel_poll_interval": 0.2,
}


def item(task_id: int, provider: str) -> str:
    return json.dumps({"task_id": task_id, "provider": provider})


async def queued(env: Env, provider: str) -> list[int]:
    raws = await env.redis.lrange(ProviderKeys.for_provider(provider).queue, 0, -1)
    return [json.loads(raw)["task_id"] for raw in raws]


async def age(env: Env, *tasks: int) -> None:
    """As if the tasks had been untouched for a while (past the settle time)."""
    for task in tasks:
        await set_task(env.db, task, updated_at=chaishu_now() - timedelta(minutes=1))


async def test_a_lost_queue_is_rebuilt_on_each_tasks_own_queue(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 2)
    lost = await add_task(env.db, novel_id)  # queued on OTHER, never started
    running = await add_task(env.db, novel_id, status="running")  # its claim vanished
    paused = await add_task(env.db, novel_id)
    cancelled = await add_task(env.db, novel_id)
    never_seen = await add_task(env.db, novel_id)  # created, never pushed: not ours
    held = await add_task(env.db, novel_id, status="running")  # claimed right now
    waiting = await add_task(env.db, novel_id)  # still in its queue
    for task in (lost, paused, cancelled):
        await env.redis.rpush(ProviderKeys.for_provider(OTHER).queue, item(task, OTHER))
    reconciler = Reconciler()
    assert await reconciler.record_queued(env.db, env.redis) == 3
    await task_queues.record(env.db, [(running, OTHER), (held, PROVIDER), (waiting, PROVIDER)])
    await set_task(env.db, paused, status="paused")
    await set_task(env.db, cancelled, status="cancelled")
    await env.redis.flushdb()  # Redis came back without its data
    await ProviderQueue(env.redis, PROVIDER, node="other-node", lease_seconds=30,
                        max_stalls=3).push({"task_id": held, "provider": PROVIDER})
    [claim] = await ProviderQueue(env.redis, PROVIDER, node="other-node", lease_seconds=30,
                                  max_stalls=3).claim(1)  # another node is holding it
    await env.redis.rpush(ProviderKeys.for_provider(PROVIDER).queue, item(waiting, PROVIDER))
    await age(env, lost, running, paused, cancelled, never_seen, held, waiting)

    pushed = await reconciler.push_back(env.db, env.redis)
    assert pushed == {OTHER: [lost, running]}  # each on the queue it was seen on
    assert sorted(await queued(env, OTHER)) == [lost, running]
    assert await queued(env, PROVIDER) == [waiting]  # not doubled; the held one stays held
    assert claim.raw == item(held, PROVIDER).encode()
    assert await reconciler.push_back(env.db, env.redis) == {}  # once
    for task, status in ((paused, "paused"), (cancelled, "cancelled"), (never_seen, "created")):
        assert (await task_row(env.db, task)).status == status


async def test_a_just_reset_task_is_left_to_its_own_push(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 2)
    task = await add_task(env.db, novel_id)
    await task_queues.record(env.db, [(task, OTHER)])
    await set_task(env.db, task, updated_at=chaishu_now())  # a restart, its item coming
    assert await Reconciler().push_back(env.db, env.redis) == {}
    await age(env, task)
    assert await Reconciler().push_back(env.db, env.redis) == {OTHER: [task]}


async def test_stale_recovery_keeps_a_task_on_its_provider(env: Env, novel_id: int) -> None:
    await add_book(env.db, novel_id, 2)
    task = await add_task(env.db, novel_id, status="running")
    await task_queues.record(env.db, [(task, OTHER)])
    await age(env, task)
    settings = env.settings.model_copy(update={"kg_recovery_grace": 1})
    result = await run_duties_once(settings, env.redis, env.db)
    assert task in result["reconciled"] + result["recovered"]
    assert await queued(env, OTHER) == [task]
    assert await queued(env, PROVIDER) == []  # not the default config's provider


@pytest.mark.slow
async def test_a_healthy_fleet_under_load_has_nothing_to_reconcile(
    env: Env, novel_id: int
) -> None:
    tasks = []
    for i in range(12):
        await add_book(env.db, novel_id + 1000 * i, 4)
        tasks.append(await add_task(env.db, novel_id + 1000 * i))
    settings = env.settings.model_copy(update=FAST)
    stop = asyncio.Event()
    handler = env.handler(FixedExtractor(delay=0.3))
    worker = asyncio.create_task(run_worker(settings, handler=handler, stop=stop))
    reconciler, pushed_any = Reconciler(), False
    try:
        for task in tasks:
            await env.redis.rpush(ProviderKeys.for_provider(PROVIDER).queue,
                                  item(task, PROVIDER))
        deadline = time.monotonic() + 120
        while [(await task_row(env.db, t)).status for t in tasks] != ["completed"] * 12:
            assert time.monotonic() < deadline, "the tasks did not complete"
            await reconciler.record_queued(env.db, env.redis)
            await age(env, *tasks)  # nothing is spared by the settle time
            pushed_any |= bool(await reconciler.push_back(env.db, env.redis))
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
    assert not pushed_any  # every task was queued or held whenever it was checked
    assert await queued(env, PROVIDER) == []
