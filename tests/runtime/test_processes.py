"""Worker processes on a real Redis: volume and limits, kill -9, SIGTERM, poison tasks."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from kgworker.queue.connection import RedisClient
from kgworker.queue.provider_queue import ProviderQueue

from .conftest import Workers, wait_exit, wait_for

pytestmark = pytest.mark.slow


def _queue(redis: RedisClient, provider: str = "alpha") -> ProviderQueue:
    return ProviderQueue(redis, provider, node="test", lease_seconds=30, max_stalls=2)


async def _started(redis: RedisClient, n: int) -> list[int] | None:
    started = [int(x) for x in await redis.lrange("kgt:started", 0, -1)]
    return started if len(started) >= n else None


async def test_10000_items_100_slots_two_processes_exactly_once_within_limits(
    redis: RedisClient, workers: Workers
) -> None:
    per_provider, total = 30, 50  # two providers x 30 > 50: the node limit binds as well
    limits = {
        "kg_workers_per_provider": per_provider,
        "kg_max_processes_per_provider": per_provider,
        "kg_max_total_processes": total,
        "kgt_sleep": 0.002,
        "kgt_fill": total,  # the first jobs wait until the node's slots are all taken
    }
    for provider in ("alpha", "beta"):
        await _queue(redis, provider).push(
            *({"task_id": i, "provider": provider} for i in range(1, 5001))
        )
    procs = [workers.start(f"bulk-{n}", **limits) for n in (1, 2)]
    await wait_for(lambda: _all_done(redis, 10_000), 120, "10,000 items")
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        assert await wait_exit(proc, 20) == 0, workers.output()
    done = await redis.hgetall("kgt:done")
    assert len(done) == 10_000 and set(done.values()) == {b"1"}
    for n in (1, 2):
        peak = {k.decode(): int(v) for k, v in (await redis.hgetall(f"kgt:max:bulk-{n}")).items()}
        assert peak["alpha"] <= per_provider and peak["beta"] <= per_provider, peak
        assert peak["total"] <= total, peak
        assert peak["total"] == total, peak  # the slots filled: the limit binds, and holds
    for provider in ("alpha", "beta"):
        counts = await _queue(redis, provider).counts()
        assert counts == {"queued": 0, "active": 0, "claimed": 0, "dead": 0, "open": 0}


async def _all_done(redis: RedisClient, n: int) -> bool:
    return bool(await redis.hlen("kgt:done") >= n)


async def _no_claims(redis: RedisClient) -> bool:
    return (await _queue(redis).counts())["claimed"] == 0


async def _kill_holder_and_recover(redis: RedisClient, workers: Workers, held: int) -> float:
    """A victim holding ``held`` claims is killed -9 beside a helper; each of the
    ``held + 2`` items is done exactly once. Returns seconds from the kill to the last."""
    total = held + 2
    await _queue(redis).push(*({"task_id": i} for i in range(1, total + 1)))
    slow = ",".join(str(i) for i in range(1, held + 1))
    victim = workers.start("victim", kgt_slow_tasks=slow, kg_workers_per_provider=held)
    await wait_for(lambda: _started(redis, held), 15, f"victim holding {held} claims")
    helper = workers.start("helper", kgt_sleep=0.05)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    await wait_exit(victim, 5)
    await wait_for(lambda: _all_done(redis, total), 25, f"all {total} items done")
    recovery = time.monotonic() - killed_at
    done = await redis.hgetall("kgt:done")
    assert {k.decode(): int(v) for k, v in done.items()} == {
        f"alpha:{i}": 1 for i in range(1, total + 1)}
    # the last item is acknowledged just after it is marked done
    await wait_for(lambda: _no_claims(redis), 5, "every claim acknowledged")
    os.kill(helper.pid, signal.SIGTERM)
    assert await wait_exit(helper, 10) == 0
    return recovery


async def test_kill_9_claims_are_finished_by_another_process_once(
    redis: RedisClient, workers: Workers
) -> None:
    settings = workers.settings
    recovery = await _kill_holder_and_recover(redis, workers, held=4)
    assert recovery <= settings.kg_lease_seconds + settings.kg_reaper_interval + 2.0, recovery


async def test_kill_9_claims_come_back_long_before_their_lease(
    redis: RedisClient, workers: Workers
) -> None:
    """A 30 s lease: the dead node's claims are back once its beats are stale, not at 30 s."""
    from kgworker.queue.liveness import DEAD_AFTER_MS

    workers.settings = workers.settings.model_copy(update={"kg_lease_seconds": 30.0})
    recovery = await _kill_holder_and_recover(redis, workers, held=3)
    settings = workers.settings
    assert recovery <= DEAD_AFTER_MS / 1000 + settings.kg_reaper_interval + 3.0, recovery
    assert re.search(r"\([1-9]\d* of a dead node\)", workers.output())  # not the lease


async def test_sigterm_drains_within_grace_and_puts_the_rest_back_at_once(
    redis: RedisClient, workers: Workers
) -> None:
    grace = workers.settings.kg_shutdown_grace  # 2 s
    await _queue(redis).push(*({"task_id": i} for i in range(1, 6)))
    proc = workers.start(
        "drainer",
        kg_worker_providers="alpha",
        kg_workers_per_provider=3,
        kgt_slow_tasks="2,3",
        kgt_sleep=0.5,
    )
    await wait_for(lambda: _started(redis, 3), 15, "3 jobs running")
    os.kill(proc.pid, signal.SIGTERM)
    sent = time.monotonic()
    assert await wait_exit(proc, grace + 5) == 0, workers.output()
    elapsed = time.monotonic() - sent
    assert grace <= elapsed < grace + 1.5, elapsed
    assert await redis.hgetall("kgt:done") == {b"alpha:1": b"1"}  # finished within the grace
    queued = [
        int(x.decode().split(":")[1].strip(" }"))
        for x in await redis.lrange("kg:ai_queue:alpha", 0, -1)
    ]
    assert queued == [2, 3, 4, 5]  # the cancelled ones back at the head, in order
    assert (await _queue(redis).counts())["claimed"] == 0


async def test_second_signal_skips_the_grace(redis: RedisClient, workers: Workers) -> None:
    workers.settings = workers.settings.model_copy(update={"kg_shutdown_grace": 30.0})
    await _queue(redis).push({"task_id": 1})
    proc = workers.start("impatient", kg_worker_providers="alpha", kgt_slow_tasks="1")
    await wait_for(lambda: _started(redis, 1), 15, "job running")
    os.kill(proc.pid, signal.SIGTERM)
    await wait_for(lambda: _log_has(workers, "stopping: no new claims"), 5, "first signal seen")
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    assert await wait_exit(proc, 10) == 0, workers.output()
    assert time.monotonic() - sent < 3
    assert await redis.lrange("kg:ai_queue:alpha", 0, -1) == [b'{"task_id": 1}']


async def _log_has(workers: Workers, text: str) -> bool:
    return text in workers.output()


async def test_a_task_that_kills_its_worker_ends_in_the_dlq(
    redis: RedisClient, workers: Workers
) -> None:
    max_stalls = workers.settings.kg_max_stalls  # 2
    await _queue(redis).push({"task_id": 99}, {"task_id": 1}, {"task_id": 2})
    deaths = 0
    deadline = time.monotonic() + 60
    while not await redis.llen("{kg:ai_queue:alpha}:dlq"):
        assert time.monotonic() < deadline, workers.output()
        proc = workers.start(
            f"victim{deaths}",
            kg_worker_providers="alpha",
            kg_workers_per_provider=1,
            kgt_kill_task=99,
        )
        code = None
        while code is None and not await redis.llen("{kg:ai_queue:alpha}:dlq"):
            code = proc.poll()
            await wait_for(lambda: _true(), 0.05)
        if code is not None:
            assert code == -signal.SIGKILL
            deaths += 1
    assert deaths == max_stalls + 1
    [entry] = await _queue(redis).dead_letters()
    assert entry["reason"] == f"stalled {max_stalls + 1} times"
    assert entry["raw"] == '{"task_id": 99}'
    await wait_for(lambda: _all_done(redis, 2), 10, "the innocent items")
    assert await redis.hgetall("kgt:done") == {b"alpha:1": b"1", b"alpha:2": b"1"}


async def _true() -> bool:
    return True
