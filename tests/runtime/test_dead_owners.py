"""A dead owner's queue claims go back at the reaper's next sweep, not when their lease ends.

The owners' beats are written to ``kgw:liveness`` on the server's clock, aged as a node
that stopped beating would leave them; the reaper under test is the node's own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from kgworker.config import Settings
from kgworker.keys import LIVENESS_KEY, reaper_lock_key
from kgworker.queue import liveness, locks, scripts
from kgworker.queue.connection import RedisClient
from kgworker.queue.provider_queue import ProviderQueue
from kgworker.runtime.context import NodeContext
from kgworker.runtime.handler import Job, SimpleHandler
from kgworker.runtime.reaper import Reaper

from .conftest import Names

pytestmark = pytest.mark.redis_modes("single", "cluster")

LEASE = 30.0


class Owners:
    """Owner names of one test, with beats of a chosen age; removed afterwards."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.run = uuid.uuid4().hex[:8]
        self.names: list[str] = []

    def name(self, label: str) -> str:
        owner = f"kgt-{label}-{self.run}"
        self.names.append(owner)
        return owner

    async def beat(self, owner: str, age_ms: int) -> None:
        seconds, micros = await self.redis.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        await self.redis.zadd(LIVENESS_KEY, {owner: now - age_ms})


@pytest.fixture
async def owners(redis: RedisClient) -> AsyncIterator[Owners]:
    made = Owners(redis)
    yield made
    if made.names:
        await redis.zrem(LIVENESS_KEY, *made.names)


def _queue(redis: RedisClient, names: Names, owner: str, lease: float = LEASE) -> ProviderQueue:
    return ProviderQueue(redis, names.alpha, node=owner.rsplit("-", 1)[0], owner=owner,
                         lease_seconds=lease, max_stalls=2)


async def _nothing(job: Job) -> None:
    return None


def _reaper(settings: Settings, redis: RedisClient, names: Names) -> Reaper:
    ctx = NodeContext(settings.model_copy(update={"kg_lease_seconds": LEASE}), redis,
                      SimpleHandler(_nothing))
    return Reaper(ctx, [names.alpha])


async def _queued(queue: ProviderQueue) -> list[int]:
    items = await queue.client.lrange(queue.keys.queue, 0, -1)
    return [json.loads(raw)["task_id"] for raw in items]


async def _lease_left(queue: ProviderQueue, claim_id: str) -> float:
    seconds, _ = await queue.client.time()
    expiry = await queue.client.zscore(queue.keys.leases, claim_id)
    assert expiry is not None
    return float(expiry) / 1000 - int(seconds)


async def test_one_sweep_returns_only_the_dead_owners_claims(
    rt_settings: Settings, redis: RedisClient, names: Names, owners: Owners
) -> None:
    """Stale beat: back now (lease not over); fresh beat or no beat: left to the lease."""
    dead, live, silent = owners.name("dead"), owners.name("live"), owners.name("silent")
    await owners.beat(dead, liveness.DEAD_AFTER_MS + 1000)
    await owners.beat(live, 0)
    queues = {o: _queue(redis, names, o) for o in (dead, live, silent)}
    await queues[dead].push({"task_id": 1}, {"task_id": 2}, {"task_id": 3}, {"task_id": 4})
    held = {o: await q.claim(1) for o, q in queues.items()}  # dead 1, live 2, silent 3
    [one] = held[dead]
    raw = await queues[dead].wait(0.1)  # the dead node's BLMOVE claim names it too
    assert raw is not None
    four = await queues[dead].claim_active(raw)
    assert four is not None
    assert await queues[dead].open(one, 1)
    assert await _lease_left(queues[dead], one.claim_id) > LEASE - 5
    reaper = _reaper(rt_settings, redis, names)
    await reaper.sweep()
    assert sorted(await _queued(queues[dead])) == [1, 4]
    assert reaper.ctx.metrics.stalls[names.alpha] == 2
    counts = await queues[live].counts()
    assert counts["claimed"] == 2 and counts["open"] == 0
    await reaper.sweep()  # idempotent: nothing is given back twice
    assert sorted(await _queued(queues[dead])) == [1, 4]
    survivors = await queues[live].claim_owners()
    assert sorted(survivors.values()) == sorted([live, silent])


async def test_a_node_judged_dead_is_fenced_out(
    rt_settings: Settings, redis: RedisClient, names: Names, owners: Owners
) -> None:
    """Its renewal, ack, release and dead letter are refused; the item runs once elsewhere."""
    dead, other = owners.name("paused"), owners.name("other")
    queue, helper = _queue(redis, names, dead), _queue(redis, names, other)
    await queue.push({"task_id": 7})
    [claim] = await queue.claim(1)
    await owners.beat(dead, liveness.DEAD_AFTER_MS + 1)
    await _reaper(rt_settings, redis, names).sweep()
    [again] = await helper.claim(1)
    assert again.raw == claim.raw and again.attempts == 1  # the node died on it: counted
    await owners.beat(dead, 0)  # it was only paused and beats again: too late
    [lost] = await scripts.run_many(redis, [queue.renew_call([claim])])
    assert [x.decode() for x in lost] == [claim.claim_id]
    assert await queue.ack(claim) is False
    assert int(await queue.release(claim, count_attempt=False)) == 0
    assert await queue.dead_letter(claim, "late") is False
    assert await helper.ack(again) is True
    assert await helper.counts() == {"queued": 0, "active": 0, "claimed": 0, "dead": 0,
                                     "open": 0}


async def test_an_owner_that_never_beat_is_judged_by_its_lease(
    rt_settings: Settings, redis: RedisClient, names: Names, owners: Owners
) -> None:
    silent = owners.name("old")
    queue = _queue(redis, names, silent, lease=0.05)
    await queue.push({"task_id": 5})
    [claim] = await queue.claim(1)
    reaper = _reaper(rt_settings, redis, names)
    while await _lease_left(queue, claim.claim_id) > -1:  # the server clock, not a sleep
        await reaper.sweep()
        if await _queued(queue):
            break
    assert await _queued(queue) == [5]
    assert (await queue.counts())["claimed"] == 0


async def test_reap_takes_a_named_claim_only_while_it_still_names_that_owner(
    redis: RedisClient, names: Names, owners: Owners
) -> None:
    a, b = owners.name("a"), owners.name("b")
    queue = _queue(redis, names, a)
    await queue.push({"task_id": 1})
    [claim] = await queue.claim(1)
    assert (await queue.reap(active_grace_ms=1000, dead={claim.claim_id: b})).requeued == 0
    result = await queue.reap(active_grace_ms=1000, dead={claim.claim_id: a})
    assert (result.requeued, result.early) == (1, 1)
    assert (await queue.reap(active_grace_ms=1000, dead={claim.claim_id: a})).requeued == 0
    assert await _queued(queue) == [1]


async def test_the_reaper_lock_of_a_dead_holder_is_taken_over(
    rt_settings: Settings, redis: RedisClient, names: Names, owners: Owners
) -> None:
    """A dead holder's lock is not waited out; a live one's, or an unnamed one's, is."""
    key = reaper_lock_key(names.alpha)
    dead, live = owners.name("holder"), owners.name("alive")
    await owners.beat(dead, liveness.DEAD_AFTER_MS + 1000)
    await owners.beat(live, 0)
    for holder, taken in ((live, False), ("no-owner-token", False), (dead, True)):
        token = locks.lock_token(holder) if holder != "no-owner-token" else holder
        await redis.set(key, token, px=60_000)
        reaper = _reaper(rt_settings, redis, names)
        await reaper.sweep()
        assert (names.alpha in reaper.held) is taken, holder
        value = await redis.get(key)
        assert (value.decode() == reaper.token) is taken, holder
    await reaper.release_locks()
    assert await redis.get(key) is None


async def test_after_its_own_redis_outage_the_reaper_waits_for_the_beats(
    rt_settings: Settings, redis: RedisClient, names: Names, owners: Owners
) -> None:
    """Every beat stops while Redis is out: silent owners are not judged until they could
    have beaten again (``DEAD_AFTER_MS`` of Redis answering this reaper)."""
    quiet = owners.name("quiet")
    await owners.beat(quiet, liveness.DEAD_AFTER_MS + 1000)
    queue = _queue(redis, names, quiet)
    await queue.push({"task_id": 3})
    await queue.claim(1)
    reaper = _reaper(rt_settings, redis, names)
    reaper.reachable_since = None  # what ``run`` sets when a sweep met a Redis error
    await reaper.sweep()
    assert await _queued(queue) == []
    assert reaper.reachable_since is not None
    reaper.reachable_since -= liveness.DEAD_AFTER_MS / 1000  # as if that long had passed
    await reaper.sweep()
    assert await _queued(queue) == [3]
