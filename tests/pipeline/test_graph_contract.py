"""One graph contract, two stores: the Neo4j writer and the demo's SQLite graph store.

The demo writes its graph through :class:`kgworker.demo.graph_store.SQLiteGraphStore`, a
re-implementation of the Neo4j writer's contract. This suite keeps the two in step: the
same chapters, written in the same (shuffled, repeated) order into both, must leave the
same nodes, edges, properties and ``task_id`` lists, also after a task is deleted.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from neo4j import AsyncDriver

from kgworker.demo.graph_store import SQLiteGraphStore, edges, nodes
from kgworker.domain.extraction import ChapterInput, ExtractionOptions
from kgworker.domain.graph_rows import ChapterGraph, prepare_chapter
from kgworker.store.graph_writer import GraphWriter
from kgworker.store.sqlite import create_sqlite_engine
from tests.support.fixed import extract_text, sample_chapter

#: Properties that are keys or bookkeeping in one store and columns in the other.
STRUCTURAL = {"name", "novel_id", "id", "task_id", "created_at", "updated_at"}
Snapshot = dict[str, dict[str, Any]]


def chapters(novel_id: int, task_id: int, count: int = 4) -> list[ChapterGraph]:
    graphs = []
    for number in range(1, count + 1):
        text = sample_chapter(number, seed=3)
        chapter = ChapterInput(novel_id=novel_id, chapter_id=novel_id + number,
                               chapter_number=number, title=f"第{number}章", content=text,
                               task_id=task_id)
        extraction = extract_text(text, number)
        graphs.append(prepare_chapter(chapter, extraction, ExtractionOptions(provider="x"),
                                      novel_title="契约", novel_author=None))
    return graphs


def _props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(props.items()) if k not in STRUCTURAL}


def _key(label: str, props: dict[str, Any]) -> str:
    key = props.get("name") if label in ("Character", "Location", "Organization") else \
        props.get("id")
    return f"{label}:{key}"


async def neo4j_snapshot(driver: AsyncDriver, novel_id: int) -> Snapshot:
    records, _, _ = await driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id)"
        " RETURN labels(n)[0] AS label, properties(n) AS p", id=novel_id)
    out: Snapshot = {}
    for r in records:
        p = dict(r["p"])
        out[_key(r["label"], p)] = {"task_id": p.get("task_id"), **_props(p)}
    records, _, _ = await driver.execute_query(
        "MATCH (a)-[r]->(b) WHERE r.novel_id = $id"
        " RETURN labels(a)[0] AS la, properties(a) AS pa, type(r) AS t, properties(r) AS pr,"
        " labels(b)[0] AS lb, properties(b) AS pb", id=novel_id)
    for r in records:
        p = dict(r["pr"])
        edge = f"{r['t']} {_key(r['la'], r['pa'])} -> {_key(r['lb'], r['pb'])}"
        out[edge] = {"task_id": p.get("task_id"), **_props(p)}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


async def sqlite_snapshot(store: SQLiteGraphStore, novel_id: int) -> Snapshot:
    out: Snapshot = {}
    async with store.engine.connect() as conn:
        for row in (await conn.execute(nodes.select().where(nodes.c.novel_id == novel_id))
                    ).mappings():
            key = row["key"] if row["label"] not in ("Chapter", "Novel") else int(row["key"])
            out[f"{row['label']}:{key}"] = {"task_id": json.loads(row["task_id"]),
                                            **_props(json.loads(row["props"]))}
        for row in (await conn.execute(edges.select().where(edges.c.novel_id == novel_id))
                    ).mappings():
            src = row["src_key"] if row["src_label"] != "Chapter" else int(row["src_key"])
            dst = row["dst_key"] if row["dst_label"] != "Chapter" else int(row["dst_key"])
            edge = f"{row['type']} {row['src_label']}:{src} -> {row['dst_label']}:{dst}"
            out[edge] = {"task_id": json.loads(row["task_id"]),
                         **_props(json.loads(row["props"]))}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> Any:
    engine = create_sqlite_engine(tmp_path / "graph.db")
    store = SQLiteGraphStore(engine)
    await store.ensure_schema()
    yield store
    await engine.dispose()


async def test_both_graph_stores_hold_the_same_graph(
    neo4j_driver: AsyncDriver, novel_id: int, sqlite_store: SQLiteGraphStore
) -> None:
    writer = GraphWriter(neo4j_driver)
    await writer.ensure_schema()
    first, second = chapters(novel_id, 1), chapters(novel_id, 2)[:2]
    order = first + second + first[:1]  # a chapter written twice (a redone chapter)
    random.Random(11).shuffle(order)
    for graph in order:
        written = [await writer.write_chapter(graph), await sqlite_store.write_chapter(graph)]
        assert written[0] == written[1], graph.chapter_id
    neo4j, lite = await neo4j_snapshot(neo4j_driver, novel_id), await sqlite_snapshot(
        sqlite_store, novel_id)
    assert len(neo4j) > 20
    assert any(v["task_id"] == [1, 2] for v in neo4j.values())
    assert lite == neo4j

    assert await writer.delete_task(2, novel_id) > 0
    assert await sqlite_store.delete_task(2, novel_id) > 0
    neo4j, lite = await neo4j_snapshot(neo4j_driver, novel_id), await sqlite_snapshot(
        sqlite_store, novel_id)
    assert all(v["task_id"] == [1] for v in neo4j.values())
    assert lite == neo4j
