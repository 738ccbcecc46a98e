"""Flow control after Redis loses its data (issue 15: limits restart from safe values).

The loss is a FLUSHDB of the test's own database, as a Redis restarted without persistence
comes back; ``LLMExtractor.on_redis_reset`` is what a node calls when it notices.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import pytest

from kgworker.keys import LlmKeys
from kgworker.llm.extractor import LLMExtractor
from kgworker.queue import scripts
from kgworker.queue.connection import RedisClient
from tests.conftest import _DB_LOCK
from tests.fakellm import max_in_window
from tests.llm.conftest import PROVIDER, MakeExtractor

KEYS = LlmKeys.for_provider(PROVIDER)


async def lose_everything(redis: RedisClient) -> None:
    """FLUSHDB, keeping only the marker that reserves this test database."""
    lock = await redis.get(_DB_LOCK)
    await redis.flushdb()
    if lock is not None:
        await redis.set(_DB_LOCK, lock, ex=900)


async def until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("reseed", [True, False], ids=["reseeded", "not-reseeded"])
async def test_the_window_after_a_loss_stays_under_the_limit(
    reseed: bool, make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    """Two nodes fill a 6-per-second window; Redis loses it; they ask for 6 more at once.
    Re-seeded, the 6 wait for the window; not re-seeded (the control), they burst to 12."""
    limits = {"kg_provider_limits": f"{PROVIDER}:rpm=6", "kg_rate_window_seconds": 1.0}
    nodes = [await make_extractor(**limits), await make_extractor(**limits)]
    times: list[float] = []

    async def admit(node: LLMExtractor, n: int) -> None:
        for _ in range(n):
            await node.limiter.acquire(PROVIDER, 10)
            times.append(time.monotonic())

    await asyncio.gather(*(admit(node, 3) for node in nodes))
    await lose_everything(redis)
    assert await redis.zcard(KEYS.rpm) == 0
    if reseed:
        done = [await node.on_redis_reset() for node in nodes]
        assert [d.admissions for d in done] == [3, 3]
        assert await redis.zcard(KEYS.rpm) == 6
    await asyncio.gather(*(admit(node, 3) for node in nodes))
    if reseed:
        assert max_in_window(times, 1.0) <= 6
    else:
        assert max_in_window(times, 1.0) == 12  # what the re-seed prevents


async def test_reseed_restores_tokens_and_cool_downs_once(
    make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    node = await make_extractor(kg_provider_limits=f"{PROVIDER}:tpm=1000",
                                kg_rate_window_seconds=30.0)
    first = await node.limiter.acquire(PROVIDER, 300)
    await node.limiter.reconcile(first, 200)  # the answer was smaller than the estimate
    await node.limiter.acquire(PROVIDER, 300)
    await node.limiter.cool_down(PROVIDER, 20)
    window = await redis.zrange(KEYS.tpm, 0, -1, withscores=True)
    assert sorted(m.decode().split("|")[1] for m, _ in window) == ["200", "300"]
    await lose_everything(redis)
    assert await redis.exists(KEYS.tpm, KEYS.cooldown) == 0
    done = await node.on_redis_reset()
    assert (done.admissions, done.cooldowns) == (2, 1)
    assert await redis.zrange(KEYS.tpm, 0, -1, withscores=True) == window
    assert 19_000 < await redis.pttl(KEYS.cooldown) <= 20_000
    again = await node.on_redis_reset()  # idempotent: same ids, cool-down already there
    assert (again.admissions, again.cooldowns) == (0, 0)
    assert await redis.zrange(KEYS.tpm, 0, -1, withscores=True) == window


ADAPTIVE = {
    "kg_adaptive_providers": PROVIDER,
    "kg_adaptive_initial": 2,
    "kg_adaptive_period": 600.0,  # the controller stays out of the way
}


async def _hold(node: LLMExtractor, n: int) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    """``n`` calls in flight, each holding a permit until the event is set."""
    release, entered = asyncio.Event(), asyncio.Event()
    held: list[object] = []

    async def call() -> None:
        async with node.adaptive.call(PROVIDER) as permit:
            held.append(permit)
            if len(held) == n:
                entered.set()
            await release.wait()

    tasks = [asyncio.create_task(call()) for _ in range(n)]
    await asyncio.wait_for(entered.wait(), 5)
    return release, tasks


async def _refused(redis: RedisClient) -> bool:
    """Would the fleet admit one more request now? (asks the permit script itself)"""
    return int(await scripts.run(redis, "permit_acquire",
                                 [KEYS.permits, KEYS.aimd, KEYS.aimd_stats],
                                 ["probe", 60_000, 2])) == 0


async def test_permits_in_flight_and_the_target_come_back(
    make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    node = await make_extractor(**ADAPTIVE, kg_adaptive_permit_lease=60.0)
    release, tasks = await _hold(node, 2)  # the target (2) is reached
    assert await _refused(redis)
    await lose_everything(redis)
    assert await redis.zcard(KEYS.permits) == 0  # a third request would be let through
    done = await node.on_redis_reset()
    assert (done.permits, done.targets) == (2, [PROVIDER])
    assert await redis.zcard(KEYS.permits) == 2
    assert await redis.hget(KEYS.aimd, "target") == b"2"
    assert b'"kind": "reset"' in (await redis.lindex(KEYS.aimd_history, 0) or b"")
    assert await _refused(redis)
    release.set()
    await asyncio.gather(*tasks)
    assert await redis.zcard(KEYS.permits) == 0  # returned, not put back


async def test_renewal_alone_puts_back_vanished_permits(
    make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    node = await make_extractor(**ADAPTIVE, kg_adaptive_permit_lease=0.3)
    release, tasks = await _hold(node, 2)
    await lose_everything(redis)

    async def back() -> bool:
        return int(await redis.zcard(KEYS.permits)) == 2

    await until(back, 5, "held permits renewed back")
    release.set()
    await asyncio.gather(*tasks)
    assert await redis.zcard(KEYS.permits) == 0


async def test_a_returned_permit_is_never_put_back(
    make_extractor: MakeExtractor, redis: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Renewals every 50 ms race short calls to two providers (renewed one after the other,
    so a call of the second can end while the first is renewed): none may re-add a permit
    already returned, which would hold a place in the target until its lease ran out."""
    other = "otherllm"
    node = await make_extractor(kg_adaptive_providers=f"{PROVIDER},{other}",
                                kg_adaptive_initial=64, kg_adaptive_period=600.0,
                                kg_adaptive_permit_lease=0.15)
    caplog.set_level(logging.WARNING, logger="kgworker.llm.adaptive")
    deadline = time.monotonic() + 2.0

    async def caller(provider: str) -> None:
        while time.monotonic() < deadline:
            async with node.adaptive.call(provider):
                await asyncio.sleep(random.uniform(0, 0.002))

    await asyncio.gather(*(caller(p) for p in (PROVIDER, other) * 8))
    assert [r.message for r in caplog.records if "put back" in r.message] == []
    for provider in (PROVIDER, other):
        assert await redis.zcard(LlmKeys.for_provider(provider).permits) == 0
