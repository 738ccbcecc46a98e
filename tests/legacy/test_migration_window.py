"""kgworker beside the old chaishu worker and the chaishu app's own resets (issue 14).

The old worker here is the simulator of this package (written from docs/chaishu-compat.md
§7): whole tasks popped newest first, chapter rows set ``running`` one at a time, integer
``kg:worker:{pid}`` keys, and its status reader and zombie guard on a timer. kgworker
nodes run as subprocesses (``tests.pipeline.worker_app``, the fixed extractor).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from neo4j import AsyncDriver
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.keys import ProviderKeys
from tests.support.fixed import sample_chapter
from tests.support.nodes import Procs

from .conftest import LaunchLegacy, wait_for
from .data import add_book, add_task, chapter_rows, set_content, task_row
from .guard import guard_once
from .resets import delete_task, requeue, restart_task
from .status import read_worker_status

PROVIDER = "openai"
FAST: dict[str, Any] = {
    "kg_worker_providers": [PROVIDER],
    "kg_lease_seconds": 3.0,
    "kg_reaper_interval": 0.3,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_retry_delay": 0.05,
    "kg_shutdown_grace": 2.0,
    "kg_duty_interval": 0.5,
    "kg_recovery_grace": 3.0,
    "kg_cancel_poll_interval": 0.2,
}
LOG_RUNNING = re.compile(r"chapter (\d+) running \(task (\d+)\)")


@pytest.fixture
async def nodes(
    settings: Settings, worker_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Procs]:
    base = {k: v for k, v in worker_env.items() if not k.startswith("KG_")}
    node_settings = settings.model_copy(update={
        **FAST, "kg_progress_channel": f"kg:task_progress:{uuid.uuid4().hex}"})
    pool = Procs(node_settings, base, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all(timeout=5)


async def kgworker_chapters(engine: AsyncEngine) -> dict[int, int]:
    """Chapter id → the task kgworker produced it for (its run rows)."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT chapter_id, task_id FROM kgworker_chapter_runs"))
        return {int(c): int(t) for c, t in rows}


def old_worker_chapters(log: str) -> set[int]:
    return {int(m.group(1)) for m in LOG_RUNNING.finditer(log)}


async def held_by_kgworker(redis: Any) -> set[int]:
    """Tasks kgworker nodes hold open (their queue claims)."""
    from kgworker.queue.provider_queue import open_task_ids

    return await open_task_ids(redis, PROVIDER)


async def running_tasks(engine: AsyncEngine, tasks: list[int]) -> set[int]:
    return {task for task in tasks if (await task_row(engine, task)).status == "running"}


async def all_completed(engine: AsyncEngine, tasks: list[int]) -> bool:
    statuses = [(await task_row(engine, task)).status for task in tasks]
    return statuses == ["completed"] * len(tasks)


@pytest.mark.slow
async def test_mixed_fleet_one_old_worker_and_two_nodes(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, nodes: Procs,
    novel_id: int,
) -> None:
    tasks, books = [], {}
    for i in range(12):
        novel = novel_id + 1000 * i
        books[novel] = await add_book(legacy_db, novel, 3)
        tasks.append(await add_task(legacy_db, novel))
    old = await launch_legacy(chapter_delay=0.3, node_ttl=10, guard_interval=1.0)
    nodes.start("kg-a", kg_workers_per_provider=2, kgt_delay=0.2)
    nodes.start("kg-b", kg_workers_per_provider=2, kgt_delay=0.2)

    async def registered() -> bool:
        view = await read_worker_status(redis, delete_dead=False)
        return {w.node_name for w in view.workers} >= {"kg-a", "kg-b", old.node_name}

    await wait_for(registered, 30, "both kgworker nodes in the old worker view")
    for task in tasks:
        await requeue(redis, task, PROVIDER)

    seen_held: set[int] = set()
    deadline = time.monotonic() + 120
    while not await all_completed(legacy_db, tasks):
        assert time.monotonic() < deadline, "tasks did not all complete"
        held = await held_by_kgworker(redis)
        running = await running_tasks(legacy_db, tasks)
        view = await read_worker_status(redis, delete_dead=False)
        ours = [w for w in view.workers if w.node_name in ("kg-a", "kg-b")]
        if held:
            seen_held |= held
            shown = set(view.active_tasks)
            # a task kgworker held and chaishu saw running before we read the old view must
            # be visible in it (or have been acknowledged in the meantime). A task claimed a
            # moment ago is still pending, not yet shown: the guard only resets running ones.
            unshown = (held & running) - shown
            assert unshown <= held - await held_by_kgworker(redis), (held, running, shown)
            assert len(ours) >= 4  # 2 nodes x 2 slots, every one parsed as an integer pid
        result = await guard_once(legacy_db, redis)
        assert result.touched_tasks == [], result
        await asyncio.sleep(0.2)

    assert seen_held, "kgworker took some of the tasks"
    old_chapters = old_worker_chapters(old.output())
    ours = await kgworker_chapters(legacy_db)
    assert old_chapters, "the old worker took some of the tasks"
    assert not old_chapters & set(ours), "a chapter was processed by both"
    writes = {int(k): int(v) for k, v in (await redis.hgetall("kgt:graph_writes")).items()}
    assert set(writes.values()) <= {1}  # kgworker processed each of its chapters once
    for task in tasks:
        row, rows = await task_row(legacy_db, task), await chapter_rows(legacy_db, task)
        assert row.status == "completed" and {r.status for r in rows.values()} == {"completed"}
        assert row.completed_chapters == row.total_chapters == len(rows) == 3
        assert row.total_entities == sum(r.entities_extracted for r in rows.values())
        assert row.total_relations == sum(r.relations_extracted for r in rows.values())


@pytest.mark.slow
async def test_an_old_workers_chapter_is_left_alone_until_it_is_gone(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, nodes: Procs,
    novel_id: int,
) -> None:
    ids = await add_book(legacy_db, novel_id, 3)
    task = await add_task(legacy_db, novel_id)
    await requeue(redis, task, PROVIDER)
    old = await launch_legacy(chapter_delay=60, node_ttl=3)
    first = ids[0]

    async def first_running() -> bool:
        row = (await chapter_rows(legacy_db, task)).get(first)
        return row is not None and row.status == "running"

    await wait_for(first_running, 20, "the old worker working chapter 1")
    nodes.start("kg-a", kg_workers_per_provider=2)
    watch_until = time.monotonic() + 2 * FAST["kg_recovery_grace"] + 2
    while time.monotonic() < watch_until:  # grace and several duty rounds go by
        rows = await chapter_rows(legacy_db, task)
        assert rows[first].status == "running", "kgworker took the old worker's chapter"
        assert await kgworker_chapters(legacy_db) == {}
        await asyncio.sleep(0.2)

    old.kill()  # its node key expires after 3 s; the grace after that

    async def completed() -> bool:
        return (await task_row(legacy_db, task)).status == "completed"

    await wait_for(completed, 60, "kgworker finishing the task after the old worker died")
    writes = {int(k): int(v) for k, v in (await redis.hgetall("kgt:graph_writes")).items()}
    assert writes == dict.fromkeys(ids, 1)  # kgworker took the chapter once (and the rest)
    rows = await chapter_rows(legacy_db, task)
    assert {r.status for r in rows.values()} == {"completed"}


@pytest.mark.slow
async def test_restarts_by_the_app_do_not_use_up_attempts(
    legacy_db: AsyncEngine, redis: Any, nodes: Procs, novel_id: int,
    neo4j_driver: AsyncDriver,
) -> None:
    ids = await add_book(legacy_db, novel_id, 6)
    task = await add_task(legacy_db, novel_id)

    async def completed() -> bool:
        row = await task_row(legacy_db, task)
        return row.status == "completed" and row.completed_at is not None

    await requeue(redis, task, PROVIDER)
    nodes.start("kg-a", kg_workers_per_provider=2)
    await wait_for(completed, 60, "the first run")
    for _ in range(2):  # the app restarts it twice; each run claims every chapter once
        await restart_task(legacy_db, redis, neo4j_driver, task, provider=PROVIDER)
        await wait_for(completed, 60, "a run after a restart by the app")
    assert nodes.stop_all() == [0]
    await restart_task(legacy_db, redis, neo4j_driver, task, provider=PROVIDER)
    await redis.delete("kgt:crashed")
    crasher = nodes.start("kg-b", kg_workers_per_provider=1, kgt_crash_chapter=3)
    deadline = time.monotonic() + 60
    while crasher.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert crasher.returncode is not None and crasher.returncode < 0  # killed mid-task
    nodes.start("kg-c", kg_workers_per_provider=2)
    await wait_for(completed, 60, "the run after the crash")
    rows = await chapter_rows(legacy_db, task)
    assert {r.status for r in rows.values()} == {"completed"}, {
        c: (r.status, r.error_message) for c, r in rows.items()}
    assert len(rows) == len(ids)


@pytest.mark.slow
async def test_a_deleted_tasks_item_is_dropped_and_our_rows_go(
    legacy_db: AsyncEngine, redis: Any, nodes: Procs, novel_id: int,
    neo4j_driver: AsyncDriver,
) -> None:
    for number, chapter in enumerate(await add_book(legacy_db, novel_id, 3), start=1):
        await set_content(legacy_db, chapter, sample_chapter(number))  # names: alias rows
    task = await add_task(legacy_db, novel_id)
    await requeue(redis, task, PROVIDER)
    nodes.start("kg-a", kg_workers_per_provider=2)

    async def completed() -> bool:
        return (await task_row(legacy_db, task)).status == "completed"

    await wait_for(completed, 60, "the task")

    async def our_rows() -> dict[str, int]:
        counts = {}
        async with legacy_db.connect() as conn:
            for table, column, value in (
                ("kgworker_chapter_claims", "task_id", task),
                ("kgworker_chapter_runs", "task_id", task),
                ("kgworker_entity_aliases", "novel_id", novel_id),
            ):
                counts[table] = int((await conn.execute(text(
                    f"SELECT COUNT(*) FROM {table} WHERE {column} = :v"), {"v": value}
                )).scalar() or 0)
        return counts

    before = await our_rows()
    assert all(before.values()), before
    assert nodes.stop_all() == [0]
    await requeue(redis, task, PROVIDER)  # an item still queued ...
    assert await delete_task(legacy_db, neo4j_driver, task)  # ... when the app deletes it
    nodes.start("kg-b", kg_workers_per_provider=2)
    queue = ProviderKeys.for_provider(PROVIDER)

    async def dropped() -> bool:
        return await redis.llen(queue.queue) == 0 and await redis.hlen(queue.claims) == 0

    await wait_for(dropped, 30, "the stale item taken off the queue")
    assert await redis.llen(queue.dlq) == 0  # not poison: never dead-lettered
    started = time.monotonic()
    await wait_for(lambda: _all_zero(our_rows), 30, "our rows of the deleted task removed")
    assert time.monotonic() - started <= 5 * FAST["kg_duty_interval"] + 5
    assert "task does not exist" in nodes.log("kg-b")


async def _all_zero(read: Any) -> bool:
    return not any((await read()).values())
