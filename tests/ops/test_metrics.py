"""``/metrics`` on a real running node: the counters move when work is done."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kgworker.api.server import start_api
from kgworker.config import Settings
from kgworker.llm.stats import LlmStats
from kgworker.observe.metrics import MetricsExporter, exported_names
from kgworker.queue.connection import RedisClient
from kgworker.runtime.handler import Job, SimpleHandler
from kgworker.runtime.worker import WorkerNode


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_when_a_node_works(settings: Settings, redis: RedisClient) -> None:
    node_settings = settings.model_copy(
        update={
            "kg_worker_providers": ["rules"],
            "kg_workers_per_provider": 3,
            "kg_api_port": 0,
            "kg_worker_node_name": "metrics-node",
        }
    )
    done: list[int] = []

    async def work(job: Job) -> None:
        await asyncio.sleep(0.05)
        done.append(job.task_id)

    node = WorkerNode(node_settings, SimpleHandler(work))
    stop = asyncio.Event()
    running = asyncio.create_task(node.run(stop))
    api = await start_api(node_settings, node=node.ctx, redis=redis)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            deadline = time.monotonic() + 20
            while "rules" not in node.ctx.pool.slots and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            before = samples((await client.get("/metrics")).text)
            assert value(before, "kgworker_completions_total", provider="rules") == 0
            assert value(before, "kgworker_slot_limit", provider="rules") == 3
            items = [json.dumps({"task_id": i, "provider": "rules"}) for i in range(1, 8)]
            await redis.rpush("kg:ai_queue:rules", *items)
            await redis.rpush("kg:ai_queue:rules", b"not json")
            while len(done) < 7 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert sorted(done) == list(range(1, 8))
            api.exporter._read_at = 0  # skip the 2 s cache: read Redis now
            after = samples((await client.get("/metrics")).text)
    finally:
        stop.set()
        assert await asyncio.wait_for(running, 30) == 0
        await api.close()
    assert value(after, "kgworker_claims_total", provider="rules") >= 7
    assert value(after, "kgworker_completions_total", provider="rules") == 7
    assert value(after, "kgworker_dead_letters_total", provider="rules") == 1
    assert value(after, "kgworker_dlq_length", provider="rules") == 1
    assert value(after, "kgworker_queue_length", provider="rules") == 0
    assert value(after, "kgworker_node_info", node="metrics-node", version=_version()) == 1


def _version() -> str:
    from kgworker import __version__

    return __version__


def test_llm_stats_become_histograms_and_counters(settings: Settings) -> None:
    stats = LlmStats()
    stats.record_call(
        "deepseek", model="deepseek-chat", seconds=0.7, prompt_tokens=100, completion_tokens=40
    )
    stats.record_call("deepseek", model="deepseek-chat", seconds=12.0, outcome="error", retries=2)
    stats.record_call("deepseek", model="deepseek-chat", seconds=0.0, outcome="cached")
    stats.record_rate_wait("deepseek", 1.5)
    exporter = MetricsExporter(settings, None, llm=stats)
    found = samples(exporter.render().decode())
    hist = "kgworker_llm_request_duration_seconds"
    labels = {"provider": "deepseek", "model": "deepseek-chat"}
    assert value(found, f"{hist}_count", **labels) == 2
    assert value(found, f"{hist}_bucket", le="1.0", **labels) == 1
    assert value(found, f"{hist}_bucket", le="+Inf", **labels) == 2
    assert value(found, f"{hist}_sum", **labels) == 12.7
    assert value(found, "kgworker_llm_tokens_total", provider="deepseek", kind="prompt") == 100
    assert value(found, "kgworker_llm_requests_total", provider="deepseek", outcome="error") == 1
    assert value(found, "kgworker_llm_cache_hits_total", provider="deepseek") == 1
    assert value(found, "kgworker_llm_retries_total", provider="deepseek") == 2
    assert value(found, "kgworker_rate_limit_wait_seconds_total", provider="deepseek") == 1.5
    assert {name for name, _ in found} <= exported_names()
