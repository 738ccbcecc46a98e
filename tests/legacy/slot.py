"""One old worker slot: a process of its own that takes whole tasks from one provider queue.

Faithful to the old worker's flaws, because kgworker has to live beside them:

- BRPOP takes the newest item first, and nothing acknowledges it: if this process dies
  after the pop, the item is gone;
- there is no lease or claim; chapter rows are set ``running`` one at a time, committed,
  and a task another worker already runs is simply joined (both may redo a chapter);
- ``cancelled`` and ``paused`` are not looked at mid-run, and the final status overwrites
  whatever the task row says by then (a deleted row just makes the updates no-ops).

The extraction is fake: a fixed delay and counts derived from the content. Content that
contains :data:`~tests.legacy.codec.FAIL_MARKER` makes the chapter fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from neo4j import AsyncDriver
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .codec import (
    FAIL_MARKER,
    WORKER_TTL,
    as_int,
    encode_fields,
    local_now,
    queue_key,
    text_of,
    worker_key,
)

log = logging.getLogger("legacy.worker")

#: The Chapter node and one shared Character, each with the task id added to its list.
GRAPH_CYPHER = """
MERGE (c:Chapter {id: $chapter_id})
ON CREATE SET c.created_at = $now
SET c.title = $title, c.novel_id = $novel_id, c.chapter_number = $number,
    c.word_count = $word_count, c.content = $content,
    c.task_id = CASE WHEN c.task_id IS NULL THEN [$task_id]
                     WHEN $task_id IN c.task_id THEN c.task_id ELSE c.task_id + $task_id END
MERGE (p:Character {name: $character, novel_id: $novel_id})
ON CREATE SET p.created_at = $now
SET p.extracted_by = 'rule', p.confidence = 0.7,
    p.task_id = CASE WHEN p.task_id IS NULL THEN [$task_id]
                     WHEN $task_id IN p.task_id THEN p.task_id ELSE p.task_id + $task_id END
"""
#: The one character every fake chapter "finds" (so tasks of one book share a node).
CHARACTER = "旧主角"


@dataclass(frozen=True)
class ChapterData:
    id: int
    number: int
    title: str | None
    content: str
    word_count: int | None


def fake_counts(content: str) -> tuple[int, int]:
    """Entities and relations of a chapter: deterministic, entities never zero."""
    return 1 + len(content) % 5, len(content) % 3


class Slot:
    """The slot's registry key, its queue loop and the task processing."""

    def __init__(
        self, *, provider: str, node_name: str, engine: AsyncEngine, redis: Any,
        driver: AsyncDriver | None, chapter_delay: float, beat: float,
        progress_channel: str | None, graph_database: str | None = None,
    ) -> None:
        self.provider = provider
        self.node_name = node_name
        self.engine = engine
        self.redis = redis
        self.driver = driver
        self.chapter_delay = chapter_delay
        self.beat = beat
        self.progress_channel = progress_channel
        self.graph_database = graph_database
        self.pid = os.getpid()
        self.key = worker_key(self.pid)

    # ------------------------------------------------------------------ registry --
    async def heartbeat(self) -> None:
        fields = {"provider": self.provider, "pid": self.pid, "node_name": self.node_name,
                  "last_heartbeat": int(time.time())}
        await self.redis.hset(self.key, mapping=encode_fields(fields))
        await self.redis.expire(self.key, WORKER_TTL)

    async def heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.beat)
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                log.warning("slot %d heartbeat failed: %s", self.pid, exc)

    async def _busy(self, task_id: int | None) -> None:
        if task_id is None:
            await self.redis.hdel(self.key, "task_id", "start_time")
            return
        fields = {"task_id": task_id, "start_time": time.time()}
        await self.redis.hset(self.key, mapping=encode_fields(fields))
        await self.redis.expire(self.key, WORKER_TTL)

    # ---------------------------------------------------------------------- loop --
    async def serve(self) -> None:
        queue = queue_key(self.provider)
        while True:
            try:
                popped = await self.redis.brpop([queue], timeout=1)
            except (RedisError, OSError) as exc:
                log.warning("slot %d cannot pop: %s", self.pid, exc)
                await asyncio.sleep(1)
                continue
            if popped is None:
                continue
            raw = text_of(popped[1])
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            task_id = as_int(payload.get("task_id")) if isinstance(payload, dict) else None
            if task_id is None:
                log.warning("dropped item: unreadable queue item %r", raw)
                continue
            await self._busy(task_id)
            try:
                await self.run_task(task_id)
            except Exception:
                log.exception("task %d crashed; the item is gone", task_id)
            finally:
                await self._busy(None)

    # --------------------------------------------------------------------- tasks --
    async def run_task(self, task_id: int) -> None:
        chapters = await self._start(task_id)
        if chapters is None:
            return
        novel_id, todo = chapters
        for chapter in todo:
            await self._chapter(task_id, novel_id, chapter)
        await self._finish(task_id)

    async def _start(self, task_id: int) -> tuple[int, list[ChapterData]] | None:
        """Under the task's row lock: refuse, join or start, and create missing rows."""
        now = local_now()
        async with self.engine.begin() as conn:
            row = (await conn.execute(text(
                "SELECT status, novel_id, chapter_ids FROM knowledge_graph_tasks "
                "WHERE id = :id FOR UPDATE"
            ), {"id": task_id})).first()
            if row is None:
                log.info("dropped item: task %d does not exist", task_id)
                return None
            status, novel_id, chapter_ids = str(row[0]), int(row[1]), row[2]
            if status in ("completed", "cancelled"):
                log.info("dropped item: task %d is %s", task_id, status)
                return None
            if status == "running":
                log.info("task %d joined", task_id)
            else:
                await conn.execute(text(
                    "UPDATE knowledge_graph_tasks SET status = 'running', started_at = :now, "
                    "updated_at = :now WHERE id = :id"
                ), {"id": task_id, "now": now})
                log.info("task %d started", task_id)
            chapters = await _task_chapters(conn, novel_id, chapter_ids)
            have = {int(cid) for (cid,) in await conn.execute(text(
                "SELECT chapter_id FROM knowledge_graph_chapter_status WHERE kg_task_id = :id"
            ), {"id": task_id})}
            missing = [c.id for c in chapters if c.id not in have]
            if missing:
                await conn.execute(text(
                    "INSERT INTO knowledge_graph_chapter_status (kg_task_id, chapter_id, "
                    "status, entities_extracted, relations_extracted, created_at, updated_at) "
                    "VALUES (:task, :chapter, 'pending', 0, 0, :now, :now)"
                ), [{"task": task_id, "chapter": cid, "now": now} for cid in missing])
            await conn.execute(text(
                "UPDATE knowledge_graph_tasks SET total_chapters = :n WHERE id = :id"
            ), {"id": task_id, "n": len(chapters)})
        return novel_id, chapters

    async def _chapter(self, task_id: int, novel_id: int, chapter: ChapterData) -> None:
        where = "WHERE kg_task_id = :task AND chapter_id = :chapter"
        ids = {"task": task_id, "chapter": chapter.id}
        async with self.engine.connect() as conn:
            status = (await conn.execute(text(
                f"SELECT status FROM knowledge_graph_chapter_status {where} LIMIT 1"), ids
            )).scalar()
        if status == "completed":
            log.info("chapter %d skipped (completed)", chapter.id)
            return
        async with self.engine.begin() as conn:
            now = local_now()
            await conn.execute(text(
                "UPDATE knowledge_graph_chapter_status SET status = 'running', "
                f"started_at = :now, updated_at = :now, error_message = NULL {where}"
            ), {**ids, "now": now})
            await conn.execute(text(
                "UPDATE knowledge_graph_tasks SET current_chapter_id = :chapter, "
                "updated_at = :now WHERE id = :task"
            ), {**ids, "now": now})
        log.info("chapter %d running (task %d)", chapter.id, task_id)
        await asyncio.sleep(self.chapter_delay)
        if FAIL_MARKER in chapter.content:
            await self._chapter_failed(task_id, chapter, "fake extraction failed")
            return
        entities, relations = fake_counts(chapter.content)
        if self.driver is not None:
            await self._write_graph(task_id, novel_id, chapter)
        async with self.engine.begin() as conn:
            now = local_now()
            await conn.execute(text(
                "UPDATE knowledge_graph_chapter_status SET status = 'completed', "
                "entities_extracted = :e, relations_extracted = :r, completed_at = :now, "
                f"updated_at = :now {where}"
            ), {**ids, "e": entities, "r": relations, "now": now})
            await conn.execute(text(
                "UPDATE knowledge_graph_tasks SET completed_chapters = completed_chapters + 1, "
                "total_entities = total_entities + :e, total_relations = total_relations + :r, "
                "updated_at = :now WHERE id = :task"
            ), {**ids, "e": entities, "r": relations, "now": now})
        log.info("chapter %d completed (task %d)", chapter.id, task_id)
        await self._progress(task_id, "running")

    async def _chapter_failed(self, task_id: int, chapter: ChapterData, message: str) -> None:
        async with self.engine.begin() as conn:
            now = local_now()
            await conn.execute(text(
                "UPDATE knowledge_graph_chapter_status SET status = 'failed', "
                "error_message = :msg, updated_at = :now "
                "WHERE kg_task_id = :task AND chapter_id = :chapter"
            ), {"task": task_id, "chapter": chapter.id, "msg": message, "now": now})
        log.info("chapter %d failed (task %d)", chapter.id, task_id)
        await self._progress(task_id, "running")

    async def _write_graph(self, task_id: int, novel_id: int, chapter: ChapterData) -> None:
        assert self.driver is not None
        await self.driver.execute_query(
            GRAPH_CYPHER, chapter_id=chapter.id, now=local_now().isoformat(),
            title=chapter.title, novel_id=novel_id, number=chapter.number,
            word_count=chapter.word_count, content=chapter.content, task_id=task_id,
            character=CHARACTER, database_=self.graph_database,
        )

    async def _finish(self, task_id: int) -> None:
        """Final status from the chapter rows; left alone while another worker has a
        chapter ``running`` (that worker finishes the task)."""
        async with self.engine.begin() as conn:
            task = (await conn.execute(text(
                "SELECT auto_retry_enabled, retry_interval_minutes FROM "
                "knowledge_graph_tasks WHERE id = :id FOR UPDATE"
            ), {"id": task_id})).first()
            if task is None:
                return
            counts = await _counts(conn, task_id)
            if counts["running"]:
                log.info("task %d left running: another worker has a chapter", task_id)
                return
            now = local_now()
            params: dict[str, Any] = {"id": task_id, "now": now, **counts}
            if counts["completed"] == counts["total"]:
                await conn.execute(text(
                    "UPDATE knowledge_graph_tasks SET status = 'completed', completed_at = "
                    ":now, completed_chapters = :completed, failed_chapters = 0, "
                    "total_entities = :entities, total_relations = :relations, "
                    "current_chapter_id = NULL, updated_at = :now WHERE id = :id"), params)
                status = "completed"
            else:
                last = (await conn.execute(text(
                    "SELECT chapter_id, error_message FROM knowledge_graph_chapter_status "
                    "WHERE kg_task_id = :id AND status = 'failed' "
                    "ORDER BY updated_at DESC, id DESC LIMIT 1"), {"id": task_id})).first()
                retry_at = now + timedelta(minutes=int(task[1])) if task[0] else None
                await conn.execute(text(
                    "UPDATE knowledge_graph_tasks SET status = 'failed', failed_at = :now, "
                    "completed_chapters = :completed, failed_chapters = :failed + :pending, "
                    "total_entities = :entities, total_relations = :relations, "
                    "error_message = :msg, last_error_chapter_id = :chapter, "
                    "retry_scheduled_at = :retry_at, current_chapter_id = NULL, "
                    "updated_at = :now WHERE id = :id"
                ), {**params, "msg": last[1] if last else None,
                    "chapter": last[0] if last else None, "retry_at": retry_at})
                status = "failed"
        log.info("task %d %s", task_id, status)
        await self._progress(task_id, status)

    async def _progress(self, task_id: int, status: str) -> None:
        if not self.progress_channel:
            return
        async with self.engine.connect() as conn:
            counts = await _counts(conn, task_id)
        total = counts["total"]
        message = {
            "type": "kg_task_progress", "task_id": task_id, "status": status,
            "progress": round(100 * counts["completed"] / total, 1) if total else 100.0,
            "completed_chapters": counts["completed"], "failed_chapters": counts["failed"],
            "total_chapters": total, "updated_at": local_now().isoformat(),
        }
        await self.redis.publish(self.progress_channel, json.dumps(message))


async def _task_chapters(
    conn: AsyncConnection, novel_id: int, chapter_ids: Any
) -> list[ChapterData]:
    """The task's chapters by chapter_number: its chapter_ids list, or the whole novel."""
    if isinstance(chapter_ids, (str, bytes)):
        chapter_ids = json.loads(chapter_ids)
    rows = await conn.execute(text(
        "SELECT id, chapter_number, title, content, word_count FROM chapters "
        "WHERE novel_id = :novel ORDER BY chapter_number, id"
    ), {"novel": novel_id})
    wanted = None if chapter_ids is None else {int(cid) for cid in chapter_ids}
    return [
        ChapterData(int(r[0]), int(r[1]), r[2], r[3] or "", r[4])
        for r in rows if wanted is None or int(r[0]) in wanted
    ]


async def _counts(conn: AsyncConnection, task_id: int) -> dict[str, int]:
    rows = (await conn.execute(text(
        "SELECT status, COUNT(*), COALESCE(SUM(entities_extracted), 0), "
        "COALESCE(SUM(relations_extracted), 0) FROM knowledge_graph_chapter_status "
        "WHERE kg_task_id = :id GROUP BY status"
    ), {"id": task_id})).all()
    counts = {"total": 0, "pending": 0, "running": 0, "completed": 0, "failed": 0,
              "entities": 0, "relations": 0}
    for status, count, entities, relations in rows:
        counts["total"] += int(count)
        if str(status) in counts:
            counts[str(status)] += int(count)
        if status == "completed":
            counts["entities"], counts["relations"] = int(entities), int(relations)
    return counts
