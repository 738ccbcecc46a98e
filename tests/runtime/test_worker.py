"""The runtime in-process, on a real Redis: order, DLQ, retries, supervisor, pause, units.

Each test runs on the single test Redis and on the Redis Cluster (providers on two masters).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from kgworker.config import Settings
from kgworker.keys import PROVIDER_SLOTS_KEY, ProviderKeys, suspend_key
from kgworker.queue.connection import RedisClient
from kgworker.queue.provider_queue import ProviderQueue
from kgworker.runtime.consumer import UNIT_BATCH
from kgworker.runtime.handler import (
    Job,
    JobHandler,
    JobStart,
    PermanentJobError,
    SimpleHandler,
    Unit,
    UnitKey,
)
from kgworker.runtime.worker import WorkerNode, run_node

from .conftest import Names, wait_for

pytestmark = pytest.mark.redis_modes("single", "cluster")


@contextlib.asynccontextmanager
async def running(settings: Settings, handler: JobHandler) -> AsyncIterator[WorkerNode]:
    """A node running in this event loop; stopped (and its exit code checked) on exit."""
    node = WorkerNode(settings, handler)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    try:
        yield node
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0


def _queue(redis: RedisClient, provider: str) -> ProviderQueue:
    return ProviderQueue(redis, provider, node="test", lease_seconds=30, max_stalls=2)


async def test_one_slot_works_items_in_fifo_order(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    settings = rt_settings.model_copy(
        update={"kg_worker_providers": [names.alpha], "kg_workers_per_provider": 1}
    )
    seen: list[int] = []

    async def record(job: Job) -> None:
        seen.append(job.task_id)

    await _queue(redis, names.alpha).push(
        *({"task_id": i, "provider": names.alpha} for i in range(1, 31))
    )
    async with running(settings, SimpleHandler(record)):
        await wait_for(lambda: _true(len(seen) == 30), 10, "30 jobs")
        await _queue(redis, names.alpha).push({"task_id": 31}, {"task_id": 32})  # idle: BLMOVE
        await wait_for(lambda: _true(len(seen) == 32), 10, "2 more jobs")
    assert seen == list(range(1, 33))


async def _true(value: bool) -> bool:
    return value


async def test_poison_payloads_land_in_the_dlq_and_the_consumer_goes_on(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    done: list[int] = []

    async def record(job: Job) -> None:
        done.append(job.task_id)

    bad = [
        b"\xff\xfenot utf-8",
        b"not json",
        b'{"provider": "alpha"}',
        b'{"task_id": "12"}',
        json.dumps({"task_id": 5, "provider": names.beta}).encode(),
    ]
    q = _queue(redis, names.alpha)
    await q.push(bad[0], {"task_id": 1}, *bad[1:], {"task_id": 2})
    async with running(rt_settings, SimpleHandler(record)) as node:
        await wait_for(lambda: _true(sorted(done) == [1, 2]), 10, "good items")
        await wait_for(lambda: _true(len(done) == 2), 1)
        entries = await wait_for(lambda: _dlq(q, 5), 5, "5 DLQ entries")
        assert node.ctx.metrics.total("dead_letters") == 5
    # Items run on concurrent slots, so their DLQ entries arrive in any order: each entry is
    # matched to its item by the raw payload it carries.
    reason_of = {str(e["raw"]): str(e["reason"]) for e in entries}
    not_utf8 = base64.b64encode(bad[0]).decode("ascii")
    assert reason_of.keys() == {not_utf8, *(item.decode() for item in bad[1:])}
    assert reason_of[not_utf8] == "not UTF-8"
    assert reason_of["not json"].startswith("not JSON")
    assert reason_of[bad[2].decode()] == "no task_id"
    assert reason_of[bad[3].decode()] == "task_id is not an integer: '12'"
    assert reason_of[bad[4].decode()] == (
        f"unknown provider '{names.beta}' on the '{names.alpha}' queue")
    encoded = [e for e in entries if e.get("raw_encoding") == "base64"]
    assert [base64.b64decode(str(e["raw"])) for e in encoded] == [bad[0]]
    assert all(e["node"] == rt_settings.kg_worker_node_name for e in entries)
    assert all(e["provider"] == names.alpha and abs(e["at"] - time.time()) < 60 for e in entries)
    assert (await q.counts())["claimed"] == 0


async def _dlq(q: ProviderQueue, n: int) -> list[dict[str, object]] | None:
    entries = await q.dead_letters()
    return entries if len(entries) >= n else None


async def test_failing_task_is_retried_then_dead_lettered(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    """Exceptions requeue at the head with a backoff; past KG_MAX_STALLS → DLQ, no loop."""
    attempts: dict[int, int] = {}

    async def flaky(job: Job) -> None:
        attempts[job.task_id] = attempts.get(job.task_id, 0) + 1
        if job.task_id == 1 and attempts[1] <= 2:
            raise RuntimeError("transient")
        if job.task_id == 2:
            raise RuntimeError("always")
        if job.task_id == 3:
            raise PermanentJobError("task 3 is cancelled")

    q = _queue(redis, names.alpha)
    await q.push({"task_id": 1}, {"task_id": 2}, {"task_id": 3})
    async with running(rt_settings, SimpleHandler(flaky)) as node:
        entries = await wait_for(lambda: _dlq(q, 2), 15, "2 DLQ entries")
        await wait_for(lambda: _true(node.ctx.metrics.completions[names.alpha] == 1), 10)
        metrics = node.ctx.metrics
        assert metrics.retries[names.alpha] == 2 + 2  # task 1 twice, task 2 twice
        assert metrics.failures[names.alpha] == 2 + 3
    assert attempts == {1: 3, 2: 3, 3: 1}  # KG_MAX_STALLS=2: the third failure dead-letters
    reasons = sorted(e["reason"] for e in entries)
    assert reasons == ["RuntimeError: always (3 attempts)", "task 3 is cancelled"]
    assert await q.counts() == {"queued": 0, "active": 0, "claimed": 0, "dead": 2, "open": 0}


class RedisUnits:
    """A handler whose jobs have units in Redis: a stand-in for chapters in MySQL."""

    def __init__(
        self, redis: RedisClient, node: str, units: int, sleep: float, tag: str = "kgt:"
    ) -> None:
        self.redis, self.node, self.units, self.sleep = redis, node, units, sleep
        self.tag = tag  #: prefix of this handler's keys
        self.claim_failures = 0

    async def start(self, job: Job) -> JobStart:
        if await self.redis.set(f"{self.tag}u:{job.task_id}:init", 1, nx=True):
            await self.redis.sadd(f"{self.tag}u:{job.task_id}:pending", *range(self.units))
        return JobStart.OPEN

    async def claim_unit(self, job: Job, owner: str, lease_seconds: float) -> Unit | None:
        if self.claim_failures > 0:
            self.claim_failures -= 1
            raise RuntimeError("claim_unit broke")
        uid = await self.redis.spop(f"{self.tag}u:{job.task_id}:pending")
        if uid is None:
            return None
        await self.redis.hset(f"{self.tag}u:{job.task_id}:running", uid, owner)
        return Unit(f"{job.task_id}:{int(uid)}", int(uid))

    async def run_unit(self, job: Job, unit: Unit) -> None:
        await asyncio.sleep(self.sleep)
        await self.redis.hincrby(f"{self.tag}udone", unit.key, 1)
        await self.redis.rpush(f"{self.tag}u:{job.task_id}:by", self.node)
        await self.redis.hdel(f"{self.tag}u:{job.task_id}:running", str(unit.data))

    async def renew_units(
        self, owner: str, units: Sequence[Unit], lease_seconds: float
    ) -> set[UnitKey]:
        return set()

    async def release_unit(self, job: Job, unit: Unit) -> None:
        await self.redis.hdel(f"{self.tag}u:{job.task_id}:running", str(unit.data))
        await self.redis.sadd(f"{self.tag}u:{job.task_id}:pending", unit.data)

    async def is_complete(self, job: Job) -> bool:
        pending = await self.redis.scard(f"{self.tag}u:{job.task_id}:pending")
        running_ = await self.redis.hlen(f"{self.tag}u:{job.task_id}:running")
        return pending == 0 and running_ == 0


async def test_one_job_is_worked_by_slots_of_two_nodes(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    """A claimed job opens to the fleet: both nodes run its units; acked once when complete."""
    base = rt_settings.model_copy(
        update={"kg_worker_providers": [names.alpha], "kg_workers_per_provider": 3}
    )
    node_one, node_two = f"{names.node}-one", f"{names.node}-two"
    one = base.model_copy(update={"kg_worker_node_name": node_one})
    two = base.model_copy(update={"kg_worker_node_name": node_two})
    await _queue(redis, names.alpha).push({"task_id": 7})
    h1 = RedisUnits(redis, node_one, 24, 0.3, names.tag)
    h2 = RedisUnits(redis, node_two, 24, 0.3, names.tag)
    async with running(one, h1) as n1, running(two, h2) as n2:
        await wait_for(lambda: redis.hlen(f"{names.tag}udone"), 10, "first unit")

        async def acked() -> bool:
            metrics = (n1.ctx.metrics, n2.ctx.metrics)
            return sum(m.completions[names.alpha] for m in metrics) == 1

        await wait_for(acked, 15, "job acknowledged")
    done = await redis.hgetall(f"{names.tag}udone")
    assert sorted(int(k.split(b":")[1]) for k in done) == list(range(24))
    assert set(done.values()) == {b"1"}
    by = [b.decode() for b in await redis.lrange(f"{names.tag}u:7:by", 0, -1)]
    assert by.count(node_one) >= 3 and by.count(node_two) >= 3
    assert await _queue(redis, names.alpha).counts() == {
        "queued": 0,
        "active": 0,
        "claimed": 0,
        "dead": 0,
        "open": 0,
    }


class BatchedRedisUnits(RedisUnits):
    """RedisUnits that claim in batches (the optional ``claim_units``), counting them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[int, int]] = []  #: (asked for, got)
        self.running, self.peak = 0, 0

    async def claim_units(
        self, job: Job, owner: str, lease_seconds: float, limit: int
    ) -> list[Unit]:
        units = []
        for _ in range(limit):
            unit = await self.claim_unit(job, owner, lease_seconds)
            if unit is None:
                break
            units.append(unit)
        self.batches.append((limit, len(units)))
        return units

    async def run_unit(self, job: Job, unit: Unit) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await super().run_unit(job, unit)
        finally:
            self.running -= 1


async def test_units_are_claimed_in_batches_within_the_free_slots(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    slots = 6
    settings = rt_settings.model_copy(
        update={"kg_worker_providers": [names.alpha], "kg_workers_per_provider": slots}
    )
    await _queue(redis, names.alpha).push({"task_id": 9})
    handler = BatchedRedisUnits(redis, names.node, 40, 0.1, names.tag)
    async with running(settings, handler) as node:
        await wait_for(lambda: _true(node.ctx.metrics.completions[names.alpha] == 1), 20,
                       "job acknowledged")
    done = await redis.hgetall(f"{names.tag}udone")
    assert sorted(int(k.split(b":")[1]) for k in done) == list(range(40))
    assert set(done.values()) == {b"1"}
    assert max(got for _, got in handler.batches) > 1  # one call filled several slots
    assert max(asked for asked, _ in handler.batches) <= min(UNIT_BATCH, slots)
    assert handler.peak == slots  # the slots filled, and never more


class OrderedRedisUnits(BatchedRedisUnits):
    """BatchedRedisUnits that record which job each unit they run belongs to, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[int] = []

    async def run_unit(self, job: Job, unit: Unit) -> None:
        self.started.append(job.task_id)
        await super().run_unit(job, unit)


async def test_open_jobs_share_the_slots_in_turn(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    """Units are claimed round-robin over the open jobs: a second book does not wait until
    the first one has no unit left."""
    settings = rt_settings.model_copy(
        update={"kg_worker_providers": [names.alpha], "kg_workers_per_provider": 4}
    )
    await _queue(redis, names.alpha).push({"task_id": 1}, {"task_id": 2})
    handler = OrderedRedisUnits(redis, names.node, 24, 0.05, names.tag)
    async with running(settings, handler) as node:
        await wait_for(lambda: _true(node.ctx.metrics.completions[names.alpha] == 2), 30,
                       "both jobs acknowledged")
    assert sorted(handler.started) == [1] * 24 + [2] * 24
    first_half = handler.started[:24]
    assert min(first_half.count(1), first_half.count(2)) >= 6  # both books moved early


async def test_a_crashed_consumer_is_restarted_and_counted(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    settings = rt_settings.model_copy(update={"kg_worker_providers": [names.alpha]})
    handler = RedisUnits(redis, "n", 4, 0, names.tag)
    handler.claim_failures = 2  # the consumer calls claim_unit itself: it crashes twice
    await _queue(redis, names.alpha).push({"task_id": 3})
    async with running(settings, handler) as node:
        await wait_for(lambda: _true(node.ctx.metrics.completions[names.alpha] == 1), 15)
        assert node.ctx.metrics.crashes[f"consumer:{names.alpha}"] == 2
        assert node.ctx.metrics.restarts[f"consumer:{names.alpha}"] == 2
    assert len(await redis.hgetall(f"{names.tag}udone")) == 4


async def test_suspended_provider_is_not_claimed_until_resumed(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    done: list[Job] = []

    async def record(job: Job) -> None:
        done.append(job)

    await redis.set(suspend_key(names.alpha), json.dumps({"until": time.time() + 600}))
    await _queue(redis, names.alpha).push({"task_id": 1})
    await _queue(redis, names.beta).push({"task_id": 2})
    async with running(rt_settings, SimpleHandler(record)):
        await wait_for(lambda: _true(len(done) == 1), 10, "beta's job")  # beta is not paused
        await asyncio.sleep(1.5)  # a negative claim: give alpha's consumer time to misbehave
        assert [j.provider for j in done] == [names.beta]
        assert await redis.llen(ProviderKeys.for_provider(names.alpha).queue) == 1
        await redis.delete(suspend_key(names.alpha))
        await wait_for(lambda: _true(len(done) == 2), 5, "alpha resumes")


async def test_live_slot_limit_and_node_limit_hold(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    current = {names.alpha: 0, names.beta: 0, "total": 0}
    peak = dict(current)
    full = asyncio.Event()  # every slot the limits allow is busy at once

    async def busy(job: Job) -> None:
        for key in (job.provider, "total"):
            current[key] += 1
            peak[key] = max(peak[key], current[key])
        if current["total"] == 5:
            full.set()
        # the first jobs wait for the others (a loaded machine claims slowly), but not forever
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(full.wait(), 2)
        await asyncio.sleep(0.02)
        for key in (job.provider, "total"):
            current[key] -= 1

    settings = rt_settings.model_copy(
        update={"kg_workers_per_provider": 4, "kg_max_total_processes": 5}
    )
    await redis.hset(PROVIDER_SLOTS_KEY, names.beta, 1)
    await _queue(redis, names.alpha).push(*({"task_id": i} for i in range(1, 61)))
    await _queue(redis, names.beta).push(*({"task_id": i} for i in range(1, 31)))
    async with running(settings, SimpleHandler(busy)) as node:
        await wait_for(lambda: _true(node.ctx.metrics.total("completions") == 90), 20)
    assert peak == {names.alpha: 4, names.beta: 1, "total": 5}


async def test_lost_lease_cancels_the_work_and_it_is_not_acked(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    settings = rt_settings.model_copy(update={"kg_worker_providers": [names.alpha]})
    alpha = ProviderKeys.for_provider(names.alpha)
    await _queue(redis, names.alpha).push({"task_id": 1})
    async with running(settings, SimpleHandler(slow)) as node:
        await asyncio.wait_for(started.wait(), 10)
        [claim_id] = await redis.hkeys(alpha.claims)
        await redis.hdel(alpha.claims, claim_id)  # another node took it over (fenced out)
        await asyncio.wait_for(cancelled.wait(), 5)
        assert node.ctx.metrics.lease_losses[names.alpha] == 1
        assert node.ctx.metrics.completions[names.alpha] == 0


async def test_registry_shows_slots_and_is_removed_on_stop(
    rt_settings: Settings, redis: RedisClient, names: Names
) -> None:
    started = asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    settings = rt_settings.model_copy(
        update={"kg_workers_per_provider": 2, "kg_shutdown_grace": 0.2}
    )
    node_name = settings.kg_worker_node_name
    await _queue(redis, names.alpha).push({"task_id": 42})

    async def slots() -> dict[bytes, dict[bytes, bytes]]:
        """This node's entries (the Cluster is shared): ``kg:worker:{N}`` naming the node."""
        found = {}
        for key in await _keys(redis, "kg:worker:*"):
            fields = await redis.hgetall(key)
            if fields.get(b"node_name") == json.dumps(node_name).encode():
                found[key] = fields
        return found

    async with running(settings, SimpleHandler(slow)):
        await asyncio.wait_for(started.wait(), 10)

        async def busy_slot() -> dict[bytes, bytes] | None:
            return next((f for f in (await slots()).values() if b"task_id" in f), None)

        fields = await wait_for(busy_slot, 5, "a busy slot in the registry")
        assert json.loads(fields[b"task_id"]) == 42
        assert json.loads(fields[b"provider"]) == names.alpha
        assert json.loads(fields[b"node_name"]) == node_name
        entries = await slots()
        assert len(entries) == 5  # 2 providers x 2 slots, and the held task's own entry
        shown = [json.loads(f[b"task_id"]) for f in entries.values() if b"task_id" in f]
        assert shown == [42, 42]  # on its busy slot and on its claim's entry
        node = await wait_for(lambda: redis.hgetall(f"kg:nodes:{node_name}"), 5)
        assert json.loads(node[b"node_type"]) == "worker"
        assert 0 < await redis.ttl(f"kg:nodes:{node_name}") <= 180
        numbers = [k.decode().split(":", 2)[2] for k in entries]
        # chaishu's reader parses the suffix as an integer pid: unique integers, pid = N
        assert len(set(numbers)) == 5 and all(n.isdigit() for n in numbers)
        assert all(json.loads(f[b"pid"]) == int(k.decode().rsplit(":", 1)[1])
                   for k, f in entries.items())
    assert await slots() == {}
    assert await redis.exists(f"kg:nodes:{node_name}") == 0
    alpha_queue = ProviderKeys.for_provider(names.alpha).queue
    assert await redis.lrange(alpha_queue, 0, -1) == [b'{"task_id": 42}']  # put back


async def _keys(redis: RedisClient, pattern: str) -> list[bytes]:
    """Matching keys by SCAN, which spans every master of a Cluster."""
    return [key async for key in redis.scan_iter(match=pattern, count=1000)]


@pytest.mark.redis_modes("single")
async def test_unreachable_redis_past_the_deadline_exits_1(rt_settings: Settings) -> None:
    settings = rt_settings.model_copy(update={"redis_port": 1, "kg_store_deadline": 0.5})
    started = time.monotonic()
    assert await asyncio.wait_for(run_node(settings, handler=SimpleHandler(_noop)), 15) == 1
    assert time.monotonic() - started < 10


async def _noop(job: Job) -> None:
    return None
