"""Shared flow control on the real Redis: RPM/TPM windows, the 429 cool-down, the breaker,
operator pause/resume, and the same scripts on a Redis Cluster (one hash slot each)."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import time
import uuid

import pytest

from kgworker.config import Settings
from kgworker.config.specs import ProviderLimit, parse_limits
from kgworker.domain.extraction import ExtractionError
from kgworker.keys import fail_key, suspend_key
from kgworker.llm.errors import ProviderSuspendedError
from kgworker.llm.limits import Breaker, RateLimiter
from kgworker.llm.providers import ChatRequest, ProviderClient, ProviderSpec
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.queue.switches import lift as resume
from kgworker.queue.switches import suspend as pause
from tests.conftest import ROOT
from tests.fakellm import FakeLLM, max_in_window
from tests.llm.conftest import PROVIDER, MakeExtractor, chapter, options


def test_parse_limits() -> None:
    limits = parse_limits("deepseek:rpm=60,tpm=100000; Zhipu:rpm=30;*:tpm=5")
    assert limits == {
        "deepseek": ProviderLimit(60, 100000),
        "zhipu": ProviderLimit(30, 0),
        "*": ProviderLimit(0, 5),
    }
    assert parse_limits("") == {}
    with pytest.raises(ValueError, match="bad item"):
        parse_limits("deepseek:rpm=fast")


async def test_rpm_window_is_never_exceeded(settings: Settings, redis: RedisClient) -> None:
    s = settings.model_copy(update={"kg_provider_limits": "p:rpm=5", "kg_rate_window_seconds": 1.0})
    limiter = RateLimiter(redis, s)
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire("p", 10)
        times.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(12)))
    assert max_in_window(times, 1.0) <= 5
    # 12 requests at 5 per window: the third window opens after two windows (+ margin).
    assert 2.0 <= time.monotonic() - started < 3.5


async def test_tpm_window_counts_tokens_and_reconciles(
    settings: Settings, redis: RedisClient
) -> None:
    s = settings.model_copy(
        update={"kg_provider_limits": "p:tpm=1000", "kg_rate_window_seconds": 1.0}
    )
    limiter = RateLimiter(redis, s)
    first = await limiter.acquire("p", 600)
    await limiter.reconcile(first, 100)  # the answer was smaller than the estimate
    started = time.monotonic()
    await limiter.acquire("p", 600)  # 100 + 600 <= 1000: admitted at once
    await limiter.acquire("p", 600)  # 1300 > 1000: waits for the window
    assert time.monotonic() - started >= 0.9


async def test_429_cools_the_provider_down_for_every_node(
    settings: Settings, redis: RedisClient
) -> None:
    node_a = RateLimiter(redis, settings)
    other_client = create_redis(settings)
    try:
        node_b = RateLimiter(other_client, settings)
        await node_a.cool_down("p", 0.5)
        started = time.monotonic()
        await node_b.acquire("p", 1)
        assert time.monotonic() - started >= 0.45
        other = time.monotonic()
        await node_b.acquire("other-provider", 1)  # other providers are not slowed
        assert time.monotonic() - other < 0.1
    finally:
        await other_client.aclose()


async def test_breaker_suspends_after_consecutive_failures_and_resumes(
    fake: FakeLLM, make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    extractor = await make_extractor(
        kg_llm_max_attempts=1, kg_breaker_threshold=3, kg_breaker_suspend_seconds=1
    )
    fake.plan.rates["http_500"] = 1.0
    for _ in range(2):
        with pytest.raises(ExtractionError) as info:
            await extractor.extract(chapter(), options())
        assert not isinstance(info.value, ProviderSuspendedError)
    assert json.loads(await redis.get(fail_key(PROVIDER))) == 2
    with pytest.raises(ProviderSuspendedError):
        await extractor.extract(chapter(), options())
    raw = await redis.get(suspend_key(PROVIDER))
    assert json.loads(raw)["until"] == pytest.approx(time.time() + 1, abs=2)
    assert 0 < await redis.ttl(suspend_key(PROVIDER)) <= 1
    calls = len(fake.log)
    with pytest.raises(ProviderSuspendedError):  # suspended: nothing is sent
        await extractor.extract(chapter(), options())
    assert len(fake.log) == calls
    fake.plan.rates.clear()
    await asyncio.sleep(1.2)  # the suspension expires by itself
    result = await extractor.extract(chapter(), options())
    assert len(result.characters) == 3
    assert await redis.get(fail_key(PROVIDER)) is None  # a success resets the count


async def test_success_resets_the_failure_count(
    fake: FakeLLM, make_extractor: MakeExtractor, redis: RedisClient
) -> None:
    extractor = await make_extractor(kg_llm_max_attempts=1, kg_breaker_threshold=3)
    fake.plan.script("http_500", "http_500", None, "http_500", "http_500")
    outcomes = []
    for _ in range(5):
        try:
            await extractor.extract(chapter(), options(use_cache=False))
            outcomes.append("ok")
        except ProviderSuspendedError:
            outcomes.append("suspended")
        except ExtractionError:
            outcomes.append("failed")
    assert outcomes == ["failed", "failed", "ok", "failed", "failed"]
    assert await redis.exists(suspend_key(PROVIDER)) == 0


async def test_operator_pause_and_resume(
    settings: Settings, redis: RedisClient, fake: FakeLLM, make_extractor: MakeExtractor
) -> None:
    extractor = await make_extractor()
    await pause(redis, PROVIDER)
    assert await redis.ttl(suspend_key(PROVIDER)) == -1  # until resumed
    assert await Breaker(redis, settings).suspended_until(PROVIDER) > time.time() + 86400
    with pytest.raises(ProviderSuspendedError):
        await extractor.extract(chapter(), options())
    assert fake.log == []
    await resume(redis, PROVIDER)
    assert await Breaker(redis, settings).suspended_until(PROVIDER) is None
    assert len((await extractor.extract(chapter(), options())).characters) == 3
    await pause(redis, PROVIDER, seconds=30)
    assert 0 < await redis.ttl(suspend_key(PROVIDER)) <= 30


def _cluster_settings(base: Settings) -> Settings | None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "services"), "env-cluster"], capture_output=True, text=True
    )
    env = {}
    for line in result.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key.strip()] = (shlex.split(value) or [""])[0]
    if result.returncode != 0 or env.get("REDIS_CLUSTER") != "true":
        return None
    return base.model_copy(
        update={
            "redis_cluster": True,
            "redis_url": None,
            "redis_host": env["REDIS_HOST"],
            "redis_port": int(env["REDIS_PORT"]),
            "redis_db": 0,
            "kg_provider_limits": "*:rpm=3,tpm=1000",
            "kg_rate_window_seconds": 1.0,
        }
    )


async def test_scripts_run_on_redis_cluster(base_settings: Settings) -> None:
    s = _cluster_settings(base_settings)
    if s is None:
        pytest.skip("no Redis Cluster (scripts/services up-cluster)")
    client = create_redis(s)
    name = f"p{uuid.uuid4().hex[:8]}"
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        pytest.skip("Redis Cluster not running (scripts/services up-cluster)")
    try:
        limiter = RateLimiter(client, s)
        permits = [await limiter.acquire(name, 100) for _ in range(3)]
        await limiter.reconcile(permits[0], 50)
        await limiter.cool_down(name, 0.05)
        breaker = Breaker(client, s)
        for _ in range(s.kg_breaker_threshold):
            suspended = await breaker.record_failure(name)
        assert suspended
        assert await breaker.suspended_until(name) is not None
        await resume(client, name)
        assert await breaker.suspended_until(name) is None
    finally:
        for key in (fail_key(name), suspend_key(name)):
            await client.delete(key)
        for suffix in ("rpm", "tpm", "cooldown"):
            await client.delete(f"{{kgw:llm:{name}}}:{suffix}")
        await client.aclose()


async def test_a_request_is_restamped_when_sent(
    settings: Settings, redis: RedisClient, fake: FakeLLM
) -> None:
    s = settings.model_copy(update={"kg_provider_limits": "deepseek:rpm=10,tpm=100000"})
    limiter = RateLimiter(redis, s)
    client = ProviderClient(ProviderSpec(PROVIDER, "k", fake.url, ("m",)), s)
    try:
        permit = await limiter.acquire(PROVIDER, 50)
        admitted = await redis.zscore("{kgw:llm:deepseek}:rpm", permit.member)
        await asyncio.sleep(0.2)  # e.g. a slow connect or a busy event loop
        await client.complete(
            ChatRequest("m", [{"role": "user", "content": "x"}]), lambda: limiter.sent(permit)
        )
        sent = await redis.zscore("{kgw:llm:deepseek}:rpm", permit.member)
        assert sent - admitted >= 190
        assert await redis.zscore("{kgw:llm:deepseek}:tpm", f"{permit.member}|50") == sent
    finally:
        await client.aclose()
