"""The pipeline under the real runtime (``run_worker``): a chaishu task pushed on Redis ends
as completed rows and the expected graph; two processes share one book; a worker killed
between the graph commit and the MySQL commit is recovered without a trace in the graph."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from kgworker.chaishu.node import run_worker
from kgworker.domain.extraction import ChapterInput, ExtractionOptions
from kgworker.domain.graph_rows import prepare_chapter
from tests.pipeline.conftest import (
    PROVIDER,
    Env,
    add_book,
    add_task,
    chapter_rows,
    drain,
    task_row,
)
from tests.pipeline.graphprint import fingerprint
from tests.support.fixed import extract_text, sample_chapter
from tests.support.nodes import Procs

ROOT = Path(__file__).resolve().parents[2]
FAST: dict[str, Any] = {
    "kg_worker_providers": [PROVIDER],
    "kg_lease_seconds": 1.5,
    "kg_reaper_interval": 0.2,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_retry_delay": 0.05,
    "kg_shutdown_grace": 2.0,
    "kg_duty_interval": 0.5,
    "kg_recovery_grace": 3.0,
    "kg_cancel_poll_interval": 0.2,
}


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def push(env: Env, task_id: int) -> Awaitable[int]:
    item = json.dumps({"task_id": task_id, "provider": PROVIDER})
    return env.redis.rpush(f"kg:ai_queue:{PROVIDER}", item)  # type: ignore[return-value]


def task_done(env: Env, task_id: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await task_row(env.db, task_id)).status == "completed"
    return check


async def test_end_to_end_rpush_to_graph(env: Env, novel_id: int) -> None:
    texts = [sample_chapter(n, seed=11) for n in range(1, 13)]
    ids = await add_book(env.db, novel_id, 12, texts=texts)
    tid = await add_task(env.db, novel_id)
    settings = env.settings.model_copy(update={**FAST, "kg_workers_per_provider": 3})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, handler=env.handler(), stop=stop))
    try:
        await push(env, tid)
        await until(task_done(env, tid), 60, "task completed")
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
    rows = await chapter_rows(env.db, tid)
    assert {r.status for r in rows.values()} == {"completed"} and set(rows) == set(ids)
    task = await task_row(env.db, tid)
    assert (task.total_chapters, task.completed_chapters, task.failed_chapters) == (12, 12, 0)
    assert await env.redis.llen(f"kg:ai_queue:{PROVIDER}") == 0  # acknowledged

    # the graph holds exactly what the deterministic extractor yields
    want: dict[str, set[Any]] = {"Character": set(), "Location": set(), "Event": set(),
                                 "rels": set()}
    entities = relations = 0
    for n, content in enumerate(texts, 1):
        ci = ChapterInput(novel_id=novel_id, chapter_id=ids[n - 1], chapter_number=n,
                          title="", content=content, task_id=tid)
        graph = prepare_chapter(ci, extract_text(content, n), ExtractionOptions(PROVIDER))
        want["Character"] |= {r["name"] for r in graph.characters}
        want["Location"] |= {r["name"] for r in graph.locations}
        want["Event"] |= {r["id"] for r in graph.events}
        want["rels"] |= {(t, r["source"], r["target"])
                         for t, rs in graph.character_relations.items() for r in rs}
        entities += graph.entity_count
        relations += graph.relation_count
    assert (task.total_entities, task.total_relations) == (entities, relations)
    for label in ("Character", "Location"):
        got, _, _ = await env.driver.execute_query(
            f"MATCH (n:{label} {{novel_id: $n}}) RETURN n.name", n=novel_id)
        assert {r[0] for r in got} == want[label]
    got, _, _ = await env.driver.execute_query(
        "MATCH (n:Event {novel_id: $n}) RETURN n.id", n=novel_id)
    assert {r[0] for r in got} == want["Event"]
    got, _, _ = await env.driver.execute_query(
        "MATCH (a:Character {novel_id: $n})-[r]->(b:Character) RETURN type(r), a.name, b.name",
        n=novel_id)
    assert {tuple(r) for r in got} == want["rels"]


@pytest.fixture
def procs(env: Env, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Procs]:
    base = {k: v for k, v in worker_env.items() if not k.startswith("KG_")}
    settings = env.settings.model_copy(update={
        # pub/sub ignores the database number: a channel no concurrent test run shares
        **FAST, "kg_progress_channel": f"kg:task_progress:{uuid.uuid4().hex}"})
    pool = Procs(settings, base, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all(timeout=5)


@pytest.mark.slow
async def test_two_processes_share_one_book(env: Env, novel_id: int, procs: Procs) -> None:
    ids = await add_book(env.db, novel_id, 200)
    tid = await add_task(env.db, novel_id)
    pubsub = env.redis.pubsub()
    await pubsub.subscribe(procs.settings.kg_progress_channel)
    # both nodes' first chapters wait for each other (KGT_MEET): however their start-up
    # times differ, the book is shared from then on at the same slots and speed
    procs.start("node-a", kg_workers_per_provider=4, kgt_delay=0.02, kgt_meet=2)
    procs.start("node-b", kg_workers_per_provider=4, kgt_delay=0.02, kgt_meet=2)
    await push(env, tid)
    await until(task_done(env, tid), 120, "task completed")
    await asyncio.sleep(1.0)  # let late finishers try (and fail) to finalise again
    assert procs.stop_all() == [0, 0]
    events = await drain(pubsub)
    writes = {int(k): int(v) for k, v in (await env.redis.hgetall("kgt:graph_writes")).items()}
    assert writes == dict.fromkeys(ids, 1)  # every chapter processed exactly once
    async with env.db.connect() as conn:
        owners = dict((await conn.execute(text(
            "SELECT SUBSTRING_INDEX(owner, '-', 2), COUNT(*) FROM kgworker_chapter_runs"
            " GROUP BY 1"))).all())
    assert set(owners) == {"node-a", "node-b"} and sum(owners.values()) == 200
    assert min(owners.values()) >= 20  # both did a real share
    task = await task_row(env.db, tid)
    assert (task.status, task.completed_chapters, task.total_chapters) == ("completed", 200, 200)
    assert [e["status"] for e in events].count("completed") == 1  # finalised once


@pytest.mark.slow
async def test_kill9_between_graph_and_mysql_commit(
    env: Env, novel_id: int, procs: Procs
) -> None:
    texts = [sample_chapter(n, seed=5) for n in range(1, 9)]
    ids = await add_book(env.db, novel_id, 8, texts=texts)
    tid = await add_task(env.db, novel_id)
    crasher = procs.start("node-a", kg_workers_per_provider=1, kgt_crash_chapter=5)
    await push(env, tid)
    deadline = time.monotonic() + 60
    while crasher.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert crasher.returncode == -signal.SIGKILL
    rows = await chapter_rows(env.db, tid)
    assert rows[ids[4]].status == "running"  # graph written, MySQL commit never happened
    procs.start("node-b", kg_workers_per_provider=2)
    await until(task_done(env, tid), 60, "task completed after recovery")
    writes = {int(k): int(v) for k, v in (await env.redis.hgetall("kgt:graph_writes")).items()}
    assert writes[ids[4]] == 2 and all(writes[c] == 1 for c in ids if c != ids[4])
    recovered = await fingerprint(env.driver, novel_id, normalize=True)
    task = await task_row(env.db, tid)

    other = novel_id + 900_000  # a clean run of the same text, as a second book
    try:
        await add_book(env.db, other, 8, texts=texts)
        clean_tid = await add_task(env.db, other)
        await push(env, clean_tid)
        await until(task_done(env, clean_tid), 60, "clean task completed")
        assert await fingerprint(env.driver, other, normalize=True) == recovered
        clean = await task_row(env.db, clean_tid)
        assert (clean.completed_chapters, clean.total_entities, clean.total_relations) == (
            task.completed_chapters, task.total_entities, task.total_relations)
    finally:
        await env.driver.execute_query(
            "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id) DETACH DELETE n",
            id=other)
