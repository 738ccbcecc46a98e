"""The old-worker simulator itself, against the real servers.

Later migration-window tests trust it to behave like the old worker, so each behaviour
they will lean on is pinned here: newest-first pops, lost items, chapter order, counters,
the reader's blind spot for non-integer ids, the guard's resets, and the app's resets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from neo4j import AsyncDriver
from sqlalchemy.ext.asyncio import AsyncEngine

from .codec import CHAISHU_TZ, decode_fields, encode_fields, local_now, node_key
from .conftest import LaunchLegacy, wait_for
from .data import (
    add_book,
    add_chapter_rows,
    add_task,
    chapter_rows,
    set_content,
    task_row,
)
from .guard import guard_once
from .resets import delete_task, recover_interrupted, restart_task, retry_failed_chapters
from .slot import CHARACTER
from .status import read_worker_status

pytestmark = pytest.mark.timeout(120)
QUEUE = "kg:ai_queue:openai"


def item(task_id: int, provider: str = "openai") -> str:
    return json.dumps({"task_id": task_id, "provider": provider})


def status_is(engine: AsyncEngine, task_id: int, status: str) -> Any:
    async def check() -> bool:
        row = await task_row(engine, task_id)
        return row is not None and row.status == status
    return check


def log_order(output: str, needles: list[str]) -> list[int]:
    return [output.index(needle) for needle in needles]


async def fake_worker(redis: Any, key: str, node: str | None, **fields: Any) -> None:
    values = {"provider": "openai", "pid": 1, "last_heartbeat": int(time.time()), **fields}
    if node is not None:
        values["node_name"] = node
    await redis.hset(key, mapping=encode_fields(values))


async def test_old_worker_completes_tasks_newest_first(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, novel_id: int,
    neo4j_driver: AsyncDriver,
) -> None:
    c1, c2, c3 = await add_book(legacy_db, novel_id, 3)
    whole = await add_task(legacy_db, novel_id)
    part = await add_task(legacy_db, novel_id, chapter_ids=[c3, c2])
    joined = await add_task(legacy_db, novel_id, status="running", started_at=local_now(),
                            total_chapters=3, completed_chapters=1, total_entities=9)
    await add_chapter_rows(legacy_db, joined, {c1: "completed"}, entities=9)
    for task in (whole, part, joined):
        await redis.rpush(QUEUE, item(task))

    proc = await launch_legacy(write_graph=True)
    for task in (whole, part, joined):
        await wait_for(status_is(legacy_db, task, "completed"), what=f"task {task}")

    out = proc.output()
    pops = log_order(out, [f"task {joined} joined", f"task {part} started",
                           f"task {whole} started"])
    assert pops == sorted(pops), out
    chapters = log_order(out, [f"chapter {c} running (task {whole})" for c in (c1, c2, c3)])
    assert chapters == sorted(chapters), out
    assert f"chapter {c1} running (task {joined})" not in out
    for task, expected in ((whole, {c1, c2, c3}), (part, {c2, c3}), (joined, {c1, c2, c3})):
        row, rows = await task_row(legacy_db, task), await chapter_rows(legacy_db, task)
        assert set(rows) == expected
        assert {r.status for r in rows.values()} == {"completed"}
        assert row.total_chapters == row.completed_chapters == len(expected)
        assert row.failed_chapters == 0
        assert row.total_entities == sum(r.entities_extracted for r in rows.values())
        assert row.total_relations == sum(r.relations_extracted for r in rows.values())
        assert row.started_at is not None and row.completed_at is not None
    kept = (await chapter_rows(legacy_db, joined))[c1]
    assert (kept.entities_extracted, kept.started_at) == (9, None)
    assert await redis.llen(QUEUE) == 0

    records = (await neo4j_driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $novel RETURN coalesce(n.id, n.name) AS k, n.task_id AS t",
        novel=novel_id)).records
    lists = {r["k"]: r["t"] for r in records}
    assert all(len(t) == len(set(t)) for t in lists.values())
    assert set(lists[c1]) == {whole} and set(lists[c2]) == {whole, part, joined}
    assert set(lists[CHARACTER]) == {whole, part, joined}


async def test_failed_chapter_fails_task_and_retry_finishes_it(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, novel_id: int,
) -> None:
    c1, c2, c3 = await add_book(legacy_db, novel_id, 3, fail=[2])
    plain = await add_task(legacy_db, novel_id)
    auto = await add_task(legacy_db, novel_id, auto_retry_enabled=True,
                          retry_interval_minutes=10)
    await redis.rpush(QUEUE, item(plain), item(auto))
    proc = await launch_legacy()
    for task in (plain, auto):
        await wait_for(status_is(legacy_db, task, "failed"), what=f"task {task} failed")

    row, rows = await task_row(legacy_db, plain), await chapter_rows(legacy_db, plain)
    assert {c: r.status for c, r in rows.items()} == {
        c1: "completed", c2: "failed", c3: "completed"}
    assert (row.completed_chapters, row.failed_chapters) == (2, 1)
    assert row.last_error_chapter_id == c2 and row.error_message == rows[c2].error_message
    assert row.failed_at is not None and row.retry_scheduled_at is None
    auto_row = await task_row(legacy_db, auto)
    assert auto_row.retry_scheduled_at - auto_row.failed_at == timedelta(minutes=10)

    await set_content(legacy_db, c2, "第2章 修好了。")
    assert await retry_failed_chapters(legacy_db, redis, plain) == 1
    await wait_for(status_is(legacy_db, plain, "completed"), what="retried task")
    rows = await chapter_rows(legacy_db, plain)
    assert {r.status for r in rows.values()} == {"completed"}
    out = proc.output()
    assert out.count(f"chapter {c1} running (task {plain})") == 1, out
    assert out.count(f"chapter {c2} running (task {plain})") == 2, out
    row = await task_row(legacy_db, plain)
    assert (row.completed_chapters, row.failed_chapters, row.error_message) == (3, 0, None)
    assert row.total_entities == sum(r.entities_extracted for r in rows.values())


async def test_reader_shows_busy_slot_and_kill_loses_the_item(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, novel_id: int,
) -> None:
    c1, _ = await add_book(legacy_db, novel_id, 2)
    task = await add_task(legacy_db, novel_id)
    proc = await launch_legacy(node_name="old-node-1", chapter_delay=60, node_ttl=2,
                               guard_interval=0)
    await redis.rpush(QUEUE, item(task))

    async def busy() -> Any:
        return (await read_worker_status(redis)).active_tasks.get(task)

    entry = await wait_for(busy, what="the busy slot in the reader")
    status = await read_worker_status(redis)
    assert status.started and status.providers == {"openai": 1}
    assert [entry.pid] == await proc.slot_pids() and entry.pid != proc.pid
    assert (entry.provider, entry.node_name) == ("openai", "old-node-1")
    assert entry.start_time is not None and abs(entry.start_time - time.time()) < 30
    assert await redis.hget(entry.key, "provider") == b'"openai"'
    assert await redis.hget(entry.key, "task_id") == str(task).encode()
    assert 7000 < await redis.ttl(entry.key) <= 7200
    node = decode_fields(await redis.hgetall(node_key("old-node-1")))
    assert node["node_type"] == "worker" and node["pid"] == proc.pid
    started = datetime.fromisoformat(node["started_at"])
    assert started.tzinfo is None
    assert abs(started - datetime.now(CHAISHU_TZ).replace(tzinfo=None)) < timedelta(minutes=1)
    assert 0 < await redis.ttl(node_key("old-node-1")) <= 2

    await wait_for(lambda: _chapter_is(legacy_db, task, c1, "running"), what="chapter 1")
    proc.kill()
    assert await redis.llen(QUEUE) == 0  # popped, never acknowledged: lost

    async def gone() -> bool:
        return not (await read_worker_status(redis)).workers
    await wait_for(gone, timeout=15, what="the dead slot to be judged dead")
    assert not await redis.exists(entry.key)  # deleted by the reader
    result = await guard_once(legacy_db, redis)
    assert result.reset == [task] and result.touched_tasks == [task]
    assert (await task_row(legacy_db, task)).status == "created"
    assert (await chapter_rows(legacy_db, task))[c1].status == "running"  # rows untouched
    assert await redis.llen(QUEUE) == 0  # reset, not re-queued


async def _chapter_is(engine: AsyncEngine, task: int, chapter: int, status: str) -> bool:
    row = (await chapter_rows(engine, task)).get(chapter)
    return row is not None and row.status == status


async def test_guard_spares_live_old_worker_and_settles_orphans(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, novel_id: int,
) -> None:
    c1, c2 = await add_book(legacy_db, novel_id, 2)
    held = await add_task(legacy_db, novel_id)
    await launch_legacy(chapter_delay=60, guard_interval=0)
    await redis.rpush(QUEUE, item(held))
    await wait_for(lambda: _chapter_is(legacy_db, held, c1, "running"), what="held task")

    orphan = await add_task(legacy_db, novel_id, status="running")
    await add_chapter_rows(legacy_db, orphan, {c1: "completed", c2: "running"})
    done = await add_task(legacy_db, novel_id, status="running")
    await add_chapter_rows(legacy_db, done, {c1: "completed", c2: "completed"})
    broken = await add_task(legacy_db, novel_id, status="running")
    await add_chapter_rows(legacy_db, broken, {c1: "completed", c2: "failed"})
    idle = await add_task(legacy_db, novel_id)

    result = await guard_once(legacy_db, redis)
    assert (result.reset, result.completed, result.failed) == ([orphan], [done], [broken])
    assert held in result.status.active_tasks and result.dropped_workers == []
    statuses = {t: (await task_row(legacy_db, t)).status
                for t in (held, orphan, done, broken, idle)}
    assert statuses == {held: "running", orphan: "created", done: "completed",
                        broken: "failed", idle: "created"}
    assert await redis.llen(QUEUE) == 0
    again = await guard_once(legacy_db, redis)
    assert again.touched_tasks == [] and again.status.deleted == []


async def test_node_runs_the_guard_on_a_timer_and_cleans_up_on_sigterm(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, novel_id: int,
) -> None:
    c1, _ = await add_book(legacy_db, novel_id, 2)
    held = await add_task(legacy_db, novel_id)
    await redis.rpush(QUEUE, item(held))
    proc = await launch_legacy(chapter_delay=60, guard_interval=0.2)
    await wait_for(lambda: _chapter_is(legacy_db, held, c1, "running"), what="held task")
    orphan = await add_task(legacy_db, novel_id, status="running")
    await wait_for(status_is(legacy_db, orphan, "created"), what="the timed guard")

    async def passes_after_reset() -> bool:
        out = proc.output()
        marker = f"reset=[{orphan}]"
        return marker in out and out.split(marker, 1)[1].count("guard:") >= 2
    await wait_for(passes_after_reset, what="two more guard passes")
    assert (await task_row(legacy_db, held)).status == "running"
    slots = await proc.slot_pids()

    assert await proc.terminate() == 0
    assert not await redis.exists(node_key("legacy-node"))
    assert not await redis.exists(*(f"kg:worker:{pid}" for pid in slots))
    assert (await task_row(legacy_db, held)).status == "running"  # interrupted, not undone
    assert (await chapter_rows(legacy_db, held))[c1].status == "running"


async def test_embedded_node_slots_are_judged_by_pid(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, novel_id: int,
) -> None:
    await add_book(legacy_db, novel_id, 2)
    by_rules = await add_task(legacy_db, novel_id, use_ai=False)
    proc = await launch_legacy(node_name="主节点-web", providers=("openai", "rules"),
                               workers_per_provider=2, guard_interval=0)
    await redis.rpush("kg:ai_queue:rules", item(by_rules, "rules"))
    await wait_for(status_is(legacy_db, by_rules, "completed"), what="the rules task")
    status = await read_worker_status(redis)
    assert status.providers == {"openai": 2, "rules": 2}
    assert sorted(w.pid for w in status.workers) == await proc.slot_pids()
    await redis.delete(node_key("主节点-web"))  # not what makes these slots alive
    assert len((await read_worker_status(redis)).workers) == 4

    proc.kill()

    async def all_dead() -> bool:
        return not (await read_worker_status(redis)).workers
    await wait_for(all_dead, timeout=15, what="the killed slots to be judged dead")
    assert not [key async for key in redis.scan_iter(match="kg:worker:*")]


async def test_reader_skips_non_integer_ids_and_judges_the_rest(
    legacy_db: AsyncEngine, redis: Any, novel_id: int,
) -> None:
    await add_book(legacy_db, novel_id, 1)
    hidden = await add_task(legacy_db, novel_id, status="running")
    await redis.hset(node_key("kgw-node"), mapping=encode_fields({"node_type": "worker"}))
    await redis.hset(node_key("other"), mapping=encode_fields({"node_type": "worker"}))
    await fake_worker(redis, "kg:worker:node-ab12-3", "kgw-node", task_id=hidden,
                      start_time=time.time())
    await fake_worker(redis, "kg:worker:4242", "other", provider="claude")
    await fake_worker(redis, "kg:worker:04242", "other", provider="claude")
    await fake_worker(redis, "kg:worker:777777", "gone-node")
    await fake_worker(redis, f"kg:worker:{os.getpid()}", "主节点-web", provider="zhipu")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_key = f"kg:worker:{int(dead.stdout)}"
    await fake_worker(redis, dead_key, "主节点-web", provider="zhipu")

    status = await read_worker_status(redis)
    assert status.skipped == ["kg:worker:node-ab12-3"]
    assert sorted(status.deleted) == sorted(["kg:worker:777777", dead_key])
    assert status.providers == {"claude": 1, "zhipu": 1}  # 4242 and 04242: one pid
    assert len(status.workers) == 3 and hidden not in status.active_tasks
    assert await redis.exists("kg:worker:node-ab12-3")  # skipped, never judged
    assert not await redis.exists("kg:worker:777777") and not await redis.exists(dead_key)

    result = await guard_once(legacy_db, redis)  # the hazard: its task looks orphaned
    assert result.reset == [hidden]


async def test_guard_drops_workers_of_inactive_providers(
    legacy_db: AsyncEngine, redis: Any, novel_id: int,
) -> None:
    await add_book(legacy_db, novel_id, 1)
    stranded = await add_task(legacy_db, novel_id, status="running")
    by_rules = await add_task(legacy_db, novel_id, status="running", use_ai=False)
    await redis.hset(node_key("other"), mapping=encode_fields({"node_type": "worker"}))
    await fake_worker(redis, "kg:worker:5151", "other", provider="ollama", task_id=stranded)
    await fake_worker(redis, "kg:worker:5152", "other", provider="rules", task_id=by_rules)

    result = await guard_once(legacy_db, redis)
    assert result.dropped_workers == ["kg:worker:5151"]
    assert result.requeued == [(stranded, "openai")]
    assert (result.reset, result.completed, result.failed) == ([], [], [])
    assert not await redis.exists("kg:worker:5151") and await redis.exists("kg:worker:5152")
    assert await redis.lrange(QUEUE, 0, -1) == [item(stranded).encode()]
    assert (await task_row(legacy_db, stranded)).status == "running"


async def test_restart_resets_rows_purges_graph_and_requeues(
    legacy_db: AsyncEngine, redis: Any, novel_id: int, neo4j_driver: AsyncDriver,
) -> None:
    c1, c2 = await add_book(legacy_db, novel_id, 2)
    task = await add_task(legacy_db, novel_id, status="completed", started_at=local_now(),
                          completed_at=local_now(), total_chapters=2, completed_chapters=2,
                          total_entities=6, total_relations=2)
    await add_chapter_rows(legacy_db, task, {c1: "completed", c2: "failed"}, entities=3)
    rules_task = await add_task(legacy_db, novel_id, status="failed", use_ai=False)
    await neo4j_driver.execute_query(
        "CREATE (:Chapter {id: $c, novel_id: $n, task_id: [$t]})"
        "-[:MENTIONS]->(:Character {name: '甲', novel_id: $n, task_id: [$t, $o]})",
        c=c1, n=novel_id, t=task, o=rules_task)

    assert await restart_task(legacy_db, redis, neo4j_driver, task) == "openai"
    row, rows = await task_row(legacy_db, task), await chapter_rows(legacy_db, task)
    assert row.status == "created" and row.started_at is None and row.completed_at is None
    counters = ("completed_chapters", "failed_chapters", "total_entities", "total_relations")
    assert [getattr(row, name) for name in counters] == [0, 0, 0, 0]
    assert {(r.status, r.entities_extracted, r.error_message) for r in rows.values()} == {
        ("pending", 0, None)}
    records = (await neo4j_driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $n RETURN labels(n)[0] AS label, n.task_id AS t",
        n=novel_id)).records
    assert [(r["label"], r["t"]) for r in records] == [("Character", [rules_task])]
    assert await redis.lrange(QUEUE, 0, -1) == [item(task).encode()]

    assert await restart_task(legacy_db, redis, neo4j_driver, rules_task) == "rules"
    assert await redis.lrange("kg:ai_queue:rules", 0, -1) == [item(rules_task, "rules").encode()]
    assert not (await neo4j_driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $n RETURN n", n=novel_id)).records


async def test_startup_recovery_sets_running_chapters_pending(
    legacy_db: AsyncEngine, novel_id: int,
) -> None:
    c1, c2, c3 = await add_book(legacy_db, novel_id, 3)
    first = await add_task(legacy_db, novel_id, status="running")
    await add_chapter_rows(legacy_db, first, {c1: "completed", c2: "running", c3: "pending"})
    second = await add_task(legacy_db, novel_id, status="running")
    await add_chapter_rows(legacy_db, second, {c1: "running"})

    assert await recover_interrupted(legacy_db, task_ids=[first]) == 1
    assert {c: r.status for c, r in (await chapter_rows(legacy_db, first)).items()} == {
        c1: "completed", c2: "pending", c3: "pending"}
    assert (await chapter_rows(legacy_db, second))[c1].status == "running"
    assert await recover_interrupted(legacy_db) == 1
    assert (await chapter_rows(legacy_db, second))[c1].status == "pending"
    assert (await task_row(legacy_db, second)).status == "running"  # tasks left as they are


async def test_old_worker_drops_items_of_finished_and_deleted_tasks(
    legacy_db: AsyncEngine, redis: Any, launch_legacy: LaunchLegacy, novel_id: int,
    neo4j_driver: AsyncDriver,
) -> None:
    (c1,) = await add_book(legacy_db, novel_id, 1)
    ok = await add_task(legacy_db, novel_id)
    done = await add_task(legacy_db, novel_id, status="completed")
    cancelled = await add_task(legacy_db, novel_id, status="cancelled")
    gone = await add_task(legacy_db, novel_id, status="completed")
    await add_chapter_rows(legacy_db, gone, {c1: "completed"})
    await neo4j_driver.execute_query(
        "CREATE (:Chapter {id: $c, novel_id: $n, task_id: [$t]})", c=c1, n=novel_id, t=gone)
    assert await delete_task(legacy_db, neo4j_driver, gone)
    assert await task_row(legacy_db, gone) is None and await chapter_rows(legacy_db, gone) == {}
    assert not (await neo4j_driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $n RETURN n", n=novel_id)).records

    await redis.rpush(QUEUE, item(ok), item(done), item(cancelled), item(gone))
    proc = await launch_legacy()
    await wait_for(status_is(legacy_db, ok, "completed"), what="the valid task")
    out = proc.output()
    drops = log_order(out, [f"dropped item: task {gone} does not exist",
                            f"dropped item: task {cancelled} is cancelled",
                            f"dropped item: task {done} is completed", f"task {ok} started"])
    assert drops == sorted(drops), out
    assert await chapter_rows(legacy_db, done) == {}
    assert await chapter_rows(legacy_db, cancelled) == {}
    assert (await task_row(legacy_db, cancelled)).status == "cancelled"
    assert await task_row(legacy_db, gone) is None
    assert await redis.llen(QUEUE) == 0
