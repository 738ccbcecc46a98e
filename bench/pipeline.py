"""Pipeline benchmark on the real servers (``python -m bench pipeline``).

1. **End to end, one process**: a book of ``--chapters`` sample chapters is pushed as a
   chaishu task and worked by ``run_worker`` with the chaishu handler and an instant
   (deterministic, no-sleep) extractor; chapters/s from RPUSH to task ``completed``.
   Everything but the model is in the loop: claims and leases in MySQL, the graph writes,
   the per-chapter MySQL commit, progress events, the runtime's Redis claim.
2. **Neo4j writes, same data**: ``--write-chapters`` synthetic chapters, each with
   ``--entities`` entities and about as many relations, written (a) by the graph writer,
   one transaction of UNWIND batches per chapter, and (b) the old way, one auto-commit
   MERGE per entity and per relation. Items/s = (nodes + relationships) / wall time.

Servers come from REDIS_*/DB_*/NEO4J_* or ``scripts/services env``. A scratch MySQL
database and a random novel id are used and removed afterwards. ``--append`` adds the
results to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from kgworker.chaishu.factory import compose_handler
from kgworker.chaishu.node import run_worker
from kgworker.config import Settings, load_settings
from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionOptions
from kgworker.domain.graph_rows import ChapterGraph, prepare_chapter
from kgworker.queue.connection import create_redis
from kgworker.store.graph import create_driver
from kgworker.store.graph_writer import GraphWriter
from kgworker.store.migrate import upgrade
from kgworker.store.mysql import create_engine
from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphConfig, KnowledgeGraphTask, Novel
from tests.support.fixed import FixedExtractor, sample_chapter

ROOT = Path(__file__).resolve().parents[1]


def _settings() -> Settings:
    environ = dict(os.environ)
    if not all(environ.get(k) for k in ("REDIS_HOST", "DB_HOST", "NEO4J_URI")):
        out = subprocess.run([str(ROOT / "scripts" / "services"), "env"], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            environ[key.strip()] = (shlex.split(value) or [""])[0]
    return load_settings(environ=environ, dotenv_path=None)


async def _cleanup_graph(settings: Settings, novel_id: int) -> None:
    driver = create_driver(settings)
    try:
        async with driver.session() as session:
            await (await session.run(
                "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id)"
                " CALL { WITH n DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS", id=novel_id
            )).consume()
    finally:
        await driver.close()


async def end_to_end(base: Settings, chapters: int, slots: int) -> dict[str, Any]:
    name = f"kgbench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, database="", pool_size=1)
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    novel_id = random.randrange(10**9, 2 * 10**9)
    settings = base.model_copy(update={
        "db_name": name, "database_url": None, "redis_db": 14, "kg_worker_providers": ["bench"],
        "kg_workers_per_provider": slots, "kg_max_processes_per_provider": slots,
        "db_pool_size": slots + 2, "kg_progress_channel": f"kg:bench:{name}",
        "log_level": "WARNING",
    })
    engine = create_engine(settings, isolation_level="READ COMMITTED")
    redis = create_redis(settings)
    driver = create_driver(settings)
    try:
        await redis.flushdb()
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(KnowledgeGraphConfig).values(
                name="bench", ai_provider="bench", use_ai=True, max_content_length=4000,
                enable_entity_extraction=True, enable_relation_extraction=True,
                is_default=True, is_system=True))
            await conn.execute(insert(Novel).values(id=novel_id, title="bench", author="-"))
            await conn.execute(insert(Chapter), [
                {"id": novel_id + n, "novel_id": novel_id, "title": f"{n}",
                 "content": sample_chapter(n, sentences=12), "chapter_number": n,
                 "word_count": 0} for n in range(1, chapters + 1)])
            task = await conn.execute(insert(KnowledgeGraphTask).values(
                novel_id=novel_id, use_ai=True, status="created", total_chapters=0,
                completed_chapters=0, failed_chapters=0, skipped_chapters=0, total_entities=0,
                total_relations=0, auto_retry_enabled=False, retry_interval_minutes=10,
                retry_count=0))
            task_id = int(task.inserted_primary_key[0])  # type: ignore[index]
        extractor = FixedExtractor()
        handler = compose_handler(settings, engine=engine, driver=driver, redis=redis,
                                  extractor=extractor)
        await handler.ensure_schema()
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, handler=handler, stop=stop))
        await asyncio.sleep(1.0)  # let the node start its consumer
        started = time.perf_counter()
        await redis.rpush("kg:ai_queue:bench", json.dumps({"task_id": task_id,
                                                            "provider": "bench"}))
        while True:
            async with engine.connect() as conn:
                status = await conn.scalar(text(
                    "SELECT status FROM knowledge_graph_tasks WHERE id = :id"), {"id": task_id})
            if status == "completed":
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        stop.set()
        await worker
        return {"chapters": chapters, "slots": slots, "seconds": elapsed,
                "chapters_per_s": chapters / elapsed}
    finally:
        await redis.flushdb()
        await redis.aclose()
        await driver.close()
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        await admin.dispose()
        await _cleanup_graph(base, novel_id)


def _synthetic(novel_id: int, number: int, entities: int) -> ChapterGraph:
    """A chapter with ``entities`` entities (70 % characters) and as many relations."""
    rng = random.Random(number)
    n_char = entities * 7 // 10
    n_loc = n_org = n_evt = max(1, (entities - n_char) // 3)
    people = [f"人物{rng.randrange(entities * 3)}" for _ in range(n_char)]
    places = [f"地点{rng.randrange(entities)}" for _ in range(n_loc)]
    data: dict[str, Any] = {
        "characters": [{"name": p, "description": f"{p}的描述", "traits": ["勇"]}
                       for p in people],
        "locations": [{"name": p, "type": "城"} for p in places],
        "organizations": [{"name": f"组织{rng.randrange(entities)}"} for _ in range(n_org)],
        "events": [{"name": f"事件{number}_{i}", "participants": people[i:i + 2]}
                   for i in range(n_evt)],
        "character_relationships": [
            {"from": people[i], "to": people[(i * 7 + 1) % n_char],
             "relation": ("FRIEND", "ENEMY", "KNOWS", "LEADS")[i % 4]} for i in range(n_char)],
        "location_relationships": [{"event": f"事件{number}_{i}", "location": places[0]}
                                   for i in range(n_evt)],
    }
    ci = ChapterInput(novel_id=novel_id, chapter_id=novel_id + number, chapter_number=number,
                      title=str(number), content="", task_id=1)
    return prepare_chapter(ci, ChapterExtraction.model_validate(data),
                           ExtractionOptions("bench"))


async def _old_way(driver: Any, graph: ChapterGraph) -> None:
    """One auto-commit MERGE per node and per relationship, as the old worker wrote."""
    nid = graph.novel_id
    async with driver.session() as s:
        await (await s.run("MERGE (c:Chapter {id: $id}) SET c += $p", id=graph.chapter_id,
                           p=graph.chapter_props)).consume()
        for label, rows in (("Character", graph.characters), ("Location", graph.locations),
                            ("Organization", graph.organizations)):
            for row in rows:
                await (await s.run(f"MERGE (n:{label} {{name: $name, novel_id: $nid}})"
                                   " SET n += $p", name=row["name"], nid=nid,
                                   p=row["props"])).consume()
        for row in graph.events:
            await (await s.run("MERGE (e:Event {id: $id}) SET e += $p", id=row["id"],
                               p=row["props"])).consume()
        for rel_type, rows in graph.character_relations.items():
            for row in rows:
                await (await s.run(
                    "MATCH (a:Character {name: $a, novel_id: $nid})"
                    " MATCH (b:Character {name: $b, novel_id: $nid})"
                    f" MERGE (a)-[r:{rel_type}]->(b) SET r += $p", a=row["source"],
                    b=row["target"], nid=nid, p=row["props"])).consume()
        for row in graph.occurrences:
            await (await s.run(
                "MATCH (e:Event {id: $e}) MATCH (l:Location {name: $l, novel_id: $nid})"
                " MERGE (e)-[r:OCCURS_IN]->(l) SET r += $p", e=row["event_id"],
                l=row["location"], nid=nid, p=row["props"])).consume()


async def graph_writes(settings: Settings, chapters: int, entities: int) -> dict[str, Any]:
    driver = create_driver(settings)
    results: dict[str, Any] = {}
    try:
        await GraphWriter(driver).ensure_schema()
        for way in ("unwind", "per_entity", "old"):
            novel_id = random.randrange(10**9, 2 * 10**9)
            warm = [_synthetic(novel_id, n, entities) for n in (chapters + 1, chapters + 2)]
            # per_entity: the same statements with one row each (a query per entity)
            writer = GraphWriter(driver, batch_size=1 if way == "per_entity" else 1000)
            for graph in warm:  # query plans cached on the server for every way
                await (_old_way(driver, graph) if way == "old" else writer.write_chapter(graph))
            graphs = [_synthetic(novel_id, n, entities) for n in range(1, chapters + 1)]
            items = sum(g.entity_count + g.relation_count for g in graphs)
            started = time.perf_counter()
            for graph in graphs:
                if way == "old":
                    await _old_way(driver, graph)
                else:
                    await writer.write_chapter(graph)
            elapsed = time.perf_counter() - started
            results[way] = {"items": items, "seconds": elapsed, "items_per_s": items / elapsed}
            await _cleanup_graph(settings, novel_id)
        results["speedup"] = results["unwind"]["items_per_s"] / results["old"]["items_per_s"]
        results["speedup_same_cypher"] = (
            results["unwind"]["items_per_s"] / results["per_entity"]["items_per_s"]
        )
        return results
    finally:
        await driver.close()


def _markdown(e2e: dict[str, Any], writes: dict[str, Any], args: argparse.Namespace) -> str:
    when = time.strftime("%Y-%m-%d %H:%M")
    u, o, p = writes["unwind"], writes["old"], writes["per_entity"]
    return "\n".join([
        "", f"## Pipeline ({when})", "",
        f"`python -m bench pipeline --chapters {args.chapters} --slots {args.slots}"
        f" --write-chapters {args.write_chapters} --entities {args.entities}`"
        f" — {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        " MariaDB 10.11, Neo4j 5.26, Redis 7, all on loopback; one run after a warm-up.", "",
        "| measure | result |", "|---|---|",
        f"| end to end, instant extractor, 1 process, {e2e['slots']} slots"
        f" | **{e2e['chapters_per_s']:.1f} chapters/s** ({e2e['chapters']} chapters in"
        f" {e2e['seconds']:.2f} s) |",
        f"| Neo4j, UNWIND batches, 1 tx per chapter | **{u['items_per_s']:,.0f} items/s**"
        f" ({u['items']:,} nodes + relationships in {u['seconds']:.2f} s) |",
        f"| Neo4j, one MERGE per entity (old way) | {o['items_per_s']:,.0f} items/s"
        f" ({o['seconds']:.2f} s) |",
        f"| Neo4j, same statements as UNWIND but one row (entity) per statement"
        f" | {p['items_per_s']:,.0f} items/s ({p['seconds']:.2f} s) |",
        f"| UNWIND speed-up vs the old way | **{writes['speedup']:.1f}x** (target >= 10x) |",
        f"| UNWIND speed-up vs the same Cypher one entity at a time"
        f" | **{writes['speedup_same_cypher']:.1f}x** |", "",
        "Items = nodes + relationships of the extraction; the UNWIND and per-entity runs also"
        " write what the old worker did not (APPEARS_IN provenance, sorted task_id /"
        " chapter_ids lists, first/last chapter numbers), which is not counted.", "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", type=int, default=300)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--write-chapters", type=int, default=20)
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()
    settings = _settings()

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        await end_to_end(settings, 20, args.slots)  # warm-up: query plans, JIT, pools
        e2e = await end_to_end(settings, args.chapters, args.slots)
        writes = await graph_writes(settings, args.write_chapters, args.entities)
        return e2e, writes

    e2e, writes = asyncio.run(run())
    report = _markdown(e2e, writes, args)
    print(report)
    if args.append:
        path = ROOT / "docs" / "benchmarks.md"
        if not path.exists():
            path.write_text("# Benchmarks\n")
        with path.open("a", encoding="utf-8") as out:
            out.write(report)
    return 0
