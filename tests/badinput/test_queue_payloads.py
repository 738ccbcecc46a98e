"""Bad queue items: random bytes, wrong JSON types, huge items, unknown task ids, unknown
providers. Each ends in the provider's DLQ with a reason; the worker keeps running and a
good task queued behind them completes as if nothing happened."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgworker.chaishu.node import run_worker
from kgworker.queue.provider_queue import MalformedItem, parse_item
from tests.pipeline.conftest import PROVIDER, Env, add_book, add_task, chapter_rows, task_row
from tests.pipeline.test_workers import FAST

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parse_item_random_bytes(raw: bytes) -> None:
    try:
        task_id, payload = parse_item(raw, PROVIDER)
    except MalformedItem as exc:
        assert str(exc)  # noqa: PT017 (a reason for the DLQ entry)
    else:
        assert isinstance(task_id, int) and task_id > 0 and isinstance(payload, dict)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON, JSON)
def test_parse_item_wrong_json_types(task_id: Any, provider: Any) -> None:
    for payload in ({"task_id": task_id, "provider": provider}, {"task_id": task_id},
                    task_id):
        raw = json.dumps(payload).encode()
        try:
            got, _ = parse_item(raw, PROVIDER)
        except MalformedItem as exc:
            assert str(exc)  # noqa: PT017
        else:
            assert type(got) is int and got > 0


BAD_ITEMS: list[bytes] = [
    b"",
    b"\xff\xfe\x00garbage",
    b"not json at all",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"{}",
    json.dumps({"task_id": "12"}).encode(),
    json.dumps({"task_id": 1.5}).encode(),
    json.dumps({"task_id": True}).encode(),
    json.dumps({"task_id": -3}).encode(),
    json.dumps({"task_id": [1]}).encode(),
    json.dumps({"task_id": {"id": 1}}).encode(),
    json.dumps({"task_id": 10**40}).encode(),  # beyond every integer column
    json.dumps({"task_id": 5, "provider": "no-such-provider"}).encode(),
    json.dumps({"task_id": 5, "provider": 42}).encode(),
    json.dumps({"task_id": 5, "provider": None}).encode(),
    b"{" * 100_000,  # deeply nested, unterminated
    ("[" * 5000 + "]" * 5000).encode(),  # deep but valid JSON
]
#: Well-formed items whose task does not exist (deleted by chaishu, say): stale, not
#: poison — dropped with a warning and counted, never dead-lettered (issue 14).
STALE_ITEMS: list[bytes] = [
    json.dumps({"task_id": 2**31 - 1}).encode(),  # a valid int, no such task
    json.dumps({"task_id": 987654}).encode(),  # unknown task id
    json.dumps({"task_id": 987655, "pad": "x" * 5_000_000}).encode(),  # 5 MB, unknown task
]


async def test_bad_items_go_to_the_dlq_and_a_good_task_still_completes(env: Env,
                                                                       novel_id: int) -> None:
    ids = await add_book(env.db, novel_id, 4)
    good = await add_task(env.db, novel_id)
    settings_ = env.settings.model_copy(update={**FAST, "kg_workers_per_provider": 2})
    queue, dlq = f"kg:ai_queue:{PROVIDER}", "{" + f"kg:ai_queue:{PROVIDER}" + "}:dlq"
    for raw in BAD_ITEMS + STALE_ITEMS:
        await env.redis.rpush(queue, raw)
    await env.redis.rpush(queue, json.dumps({"task_id": good, "provider": PROVIDER}))
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings_, handler=env.handler(), stop=stop))
    try:
        deadline = time.monotonic() + 90
        while True:
            done = (await task_row(env.db, good)).status == "completed"
            if done and await env.redis.llen(dlq) >= len(BAD_ITEMS):
                break
            assert not worker.done(), "the worker stopped"
            assert time.monotonic() < deadline, (done, await env.redis.llen(dlq))
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        assert not worker.done()
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
    entries = [json.loads(e) for e in await env.redis.lrange(dlq, 0, -1)]
    assert len(entries) == len(BAD_ITEMS)
    assert all(e["reason"] for e in entries), entries
    reasons = " | ".join(e["reason"] for e in entries)
    assert "beyond any task row" in reasons and "unknown provider" in reasons, reasons
    assert not any(e["raw"].startswith('{"task_id": 98765') for e in entries)
    assert await env.redis.llen(queue) == 0
    rows = await chapter_rows(env.db, good)
    assert set(rows) == set(ids) and {r.status for r in rows.values()} == {"completed"}


@pytest.mark.parametrize("spelling", ["DeepSeek", " deepseek ", "DEEPSEEK", " DeepSeek "])
def test_chaishu_provider_spellings_match_their_queue(spelling: str) -> None:
    """chaishu's producer builds the key from provider.strip().lower() and puts the provider
    into the payload as given: such an item belongs to its queue (issue 15)."""
    raw = json.dumps({"task_id": 7, "provider": spelling}).encode()
    task_id, payload = parse_item(raw, spelling.strip().lower())
    assert (task_id, payload["provider"]) == (7, spelling)
    with pytest.raises(MalformedItem, match="unknown provider"):
        parse_item(raw, "zhipu")  # a provider that really disagrees with the queue


async def test_items_pushed_the_way_chaishu_pushes_them_complete(env: Env,
                                                                novel_id: int) -> None:
    tasks = []
    for i, spelling in enumerate(("DeepSeek", " deepseek ", "DEEPSEEK")):
        await add_book(env.db, novel_id + 100 * i, 2)
        tasks.append(await add_task(env.db, novel_id + 100 * i))
        await env.redis.rpush(f"kg:ai_queue:{spelling.strip().lower()}",
                              json.dumps({"task_id": tasks[-1], "provider": spelling}))
    settings_ = env.settings.model_copy(update={**FAST, "kg_worker_providers": ["deepseek"]})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings_, handler=env.handler(), stop=stop))
    try:
        deadline = time.monotonic() + 60
        while [(await task_row(env.db, t)).status for t in tasks] != ["completed"] * 3:
            assert time.monotonic() < deadline and not worker.done()
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
    assert await env.redis.llen("{kg:ai_queue:deepseek}:dlq") == 0
