"""The AIMD rule step by step, the fleet permit on real Redis, and what operators see.

The rule (:mod:`kgworker.llm.aimd`) is pure, so each clause has its own case. The permit
tests prove what the fleet test cannot isolate: never more permits than the target, a dead
node's permits expire with their lease, a 429 cuts the target at once, and the controller
records the change in state and history, which status, metrics and the CLI show.
"""

from __future__ import annotations

import asyncio
import json
import sys

from kgworker.config import Settings
from kgworker.keys import PROVIDER_SLOTS_KEY, LlmKeys
from kgworker.llm import aimd
from kgworker.llm.adaptive import AdaptiveGate, read_states
from kgworker.llm.errors import CallErrorKind, LLMCallError
from kgworker.observe.metrics import MetricsExporter
from kgworker.queue.connection import RedisClient

T = aimd.Tuning(minimum=1, maximum=20, decrease=0.5, tolerance=1.0, floor_periods=5)


def ok(n: int = 10, latency: float = 100.0, denied: int = 1, **kw: int) -> aimd.PeriodStats:
    return aimd.PeriodStats(ok=n, latency_ms_sum=n * latency, denied=denied, **kw)


def test_increase_only_while_demand_waits() -> None:
    state = aimd.ControlState(target=4)
    change = aimd.step(state, ok(), T)
    assert change is not None and (change.old, change.new, change.kind) == (4, 5, "increase")
    assert aimd.step(state, ok(denied=0), T) is None and state.target == 5


def test_decrease_on_timeouts_and_latency_growth() -> None:
    state = aimd.ControlState(target=10)
    change = aimd.step(state, ok(timeouts=2, peak=10), T)
    assert change is not None and (change.new, change.kind) == (5, "decrease_timeout")
    assert aimd.step(state, ok(), T) is None  # the period after a cut is skipped
    state = aimd.ControlState(target=10, latencies=[100.0])
    change = aimd.step(state, ok(latency=250.0), T)
    assert change is not None and change.kind == "decrease_latency" and change.new == 5


def test_a_cut_made_in_redis_is_recorded_and_probing_slows_at_the_ceiling() -> None:
    state = aimd.ControlState(target=9)  # Redis already cut 12 → 9
    change = aimd.step(state, ok(throttled=3), T, cut_from=12)
    assert change is not None and (change.old, change.new, change.kind) == (12, 9, "decrease_429")
    targets = []
    for _ in range(12):
        aimd.step(state, ok(), T)
        targets.append(state.target)
    # skip one period, climb to 11, then wait PROBE_PERIODS before trying 12 again
    assert targets[:3] == [9, 10, 11] and targets.count(11) == aimd.PROBE_PERIODS
    assert 12 in targets and state.ceiling == 0


def test_bounded_by_max_and_by_the_rate_limit() -> None:
    state = aimd.ControlState(target=20)
    assert aimd.step(state, ok(), T) is None  # at KG_ADAPTIVE_MAX
    limited = aimd.Tuning(maximum=50, rate_per_second=10.0)  # 10 req/s x 0.1 s = 1 busy
    change = aimd.step(state, ok(), limited)
    assert change is not None and change.kind == "bound" and change.new == 3


def adaptive_settings(settings: Settings, **kw: object) -> Settings:
    values = {"kg_adaptive_providers": "deepseek", "kg_adaptive_initial": 2,
              "kg_adaptive_period": 60.0, **kw}
    return settings.model_copy(update=values)


async def test_permits_bound_the_fleet_and_expire_with_a_dead_node(
    settings: Settings, redis: RedisClient
) -> None:
    s = adaptive_settings(settings, kg_adaptive_permit_lease=0.5)
    dead, live = AdaptiveGate(redis, s), AdaptiveGate(redis, s)
    try:
        first = await dead._take("deepseek")  # never returned: its node "died"
        dead._held.clear()  # and nobody renews it
        async with live.call("deepseek") as second:
            assert second is not None
            waiter = asyncio.create_task(live._take("deepseek"))
            await asyncio.sleep(0.2)
            assert not waiter.done()  # target 2, two permits held
            third = await asyncio.wait_for(waiter, 2.0)  # the dead node's lease ran out
        assert first.id != third.id
        await live._give_back(third, "ok")
    finally:
        await dead.aclose()
        await live.aclose()


async def test_a_429_cuts_at_once_and_the_controller_records_it(
    settings: Settings, redis: RedisClient, worker_env: dict[str, str]
) -> None:
    s = adaptive_settings(settings, kg_adaptive_decrease=0.5)
    keys = LlmKeys.for_provider("deepseek")
    await redis.hset(keys.aimd, "target", 8)
    gate = AdaptiveGate(redis, s)
    try:
        for _ in range(3):
            try:
                async with gate.call("deepseek"):
                    raise LLMCallError(CallErrorKind.RATE_LIMITED, "capacity", status=429)
            except LLMCallError:
                pass
        assert int(await redis.hget(keys.aimd, "target")) == 4  # once per hold window
        change = await gate.control_step("deepseek")
        assert change is not None
        assert (change.old, change.new, change.kind) == (8, 4, "decrease_429")
    finally:
        await gate.aclose()
    (state,) = await read_states(redis, s, ["deepseek"])
    assert state["target"] == 4 and state["kind"] == "decrease_429"
    assert state["history"][0]["reason"].startswith("3 x 429")
    exporter = MetricsExporter(s, redis)
    text = (await exporter.scrape()).decode()
    assert 'kgworker_adaptive_target{provider="deepseek"} 4.0' in text
    assert 'kgworker_adaptive_changes_total{provider="deepseek"} 1.0' in text

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", "provider", "scale", "zhipu", "auto",
        env={**worker_env, "KG_WORKER_PROVIDERS": "deepseek,zhipu"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0 and b"adaptive" in out, err
    assert await redis.hget(PROVIDER_SLOTS_KEY, "zhipu") == b"auto"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", "status", "--json",
        env={**worker_env, "KG_WORKER_PROVIDERS": "deepseek,zhipu"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    shown = {a["provider"]: a for a in json.loads(out)["adaptive"]}
    assert shown["zhipu"]["mode"] == "auto" and shown["zhipu"]["history"][0]["kind"] == "enabled"
    assert shown["deepseek"]["target"] == 4

