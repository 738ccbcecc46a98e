"""An embedded graph store on SQLite behind the pipeline's ``GraphSink`` protocol.

Why: the demo must run where no Neo4j is. It keeps the Neo4j writer's contract
(docs/chaishu-compat.md §3) so the demo graph is the graph a deployment would hold: nodes
MERGEd on the same keys (entities by label + name within the novel, events, chapters and
novels by id), ``task_id`` lists sorted and without duplicates, chapter-ordered properties
decided by ``last_chapter_number``, counts set and never added, edges MERGEd by type +
ends, an edge whose end is missing dropped and counted. One transaction per chapter;
writing a chapter twice changes nothing. ``tests/pipeline/test_graph_contract.py`` writes
the same chapters into this store and into the Neo4j writer and requires the same graph
from both."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, and_, delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.domain.graph_rows import ChapterGraph
from kgworker.observe.graph_html import BookGraph, GraphEdge, GraphNode
from kgworker.store.graph_writer import WriteResult

metadata = MetaData()
nodes = Table(
    "demo_graph_nodes", metadata,
    Column("novel_id", Integer, primary_key=True),
    Column("label", String(20), primary_key=True),
    Column("key", String(300), primary_key=True),  #: name, or id for Event/Chapter/Novel
    Column("props", Text, nullable=False),  #: JSON object
    Column("task_id", Text, nullable=False),  #: JSON sorted list
)
edges = Table(
    "demo_graph_edges", metadata,
    Column("novel_id", Integer, primary_key=True),
    Column("type", String(30), primary_key=True),
    Column("src_label", String(20), primary_key=True),
    Column("src_key", String(300), primary_key=True),
    Column("dst_label", String(20), primary_key=True),
    Column("dst_key", String(300), primary_key=True),
    Column("props", Text, nullable=False),
    Column("task_id", Text, nullable=False),
)

ENTITY_LABELS = ("Character", "Location", "Organization")
#: Edge types between entities (APPEARS_IN links an entity to a chapter).
RELATION_EDGES = ("FRIEND", "ENEMY", "LOVES", "HATES", "KNOWS", "LEADS", "FOLLOWS",
                  "PARTICIPATES_IN", "OCCURS_IN")


def _sorted_add(values: Iterable[Any], value: Any) -> list[Any]:
    return sorted({*values, value})


class SQLiteGraphStore:
    """:class:`~kgworker.store.graph_writer.GraphSink` on SQLite (tables ``demo_graph_*``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def ensure_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def write_chapter(self, graph: ChapterGraph) -> WriteResult:
        async with self.engine.begin() as conn:
            return await _Chapter(conn, graph).write()

    async def delete_task(self, task_id: int, novel_id: int) -> int:
        """Remove ``task_id`` from every list of the novel; delete what no task holds (and,
        like DETACH DELETE, the edges of a deleted node)."""
        changed = 0
        async with self.engine.begin() as conn:
            for table in (edges, nodes):
                rows = (await conn.execute(select(table).where(table.c.novel_id == novel_id)))
                for row in rows.mappings().all():
                    tasks = json.loads(row["task_id"])
                    if task_id not in tasks:
                        continue
                    changed += 1
                    left = [t for t in tasks if t != task_id]
                    where = and_(*(c == row[c.name] for c in table.primary_key.columns))
                    if left:
                        await conn.execute(
                            table.update().where(where).values(task_id=json.dumps(left))
                        )
                        continue
                    await conn.execute(delete(table).where(where))
                    if table is nodes:
                        await conn.execute(delete(edges).where(
                            edges.c.novel_id == novel_id,
                            ((edges.c.src_label == row["label"]) & (edges.c.src_key == row["key"]))
                            | ((edges.c.dst_label == row["label"])
                               & (edges.c.dst_key == row["key"]))))
        return changed

    # ----------------------------------------------------------------------- reading --
    async def counts(self, novel_id: int) -> dict[str, int]:
        """Nodes per label and edges per type of a novel (``edge:TYPE`` keys)."""
        out: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for label, in (await conn.execute(
                select(nodes.c.label).where(nodes.c.novel_id == novel_id)
            )).all():
                out[label] = out.get(label, 0) + 1
            for etype, in (await conn.execute(
                select(edges.c.type).where(edges.c.novel_id == novel_id)
            )).all():
                out[f"edge:{etype}"] = out.get(f"edge:{etype}", 0) + 1
        return out

    async def book_graph(self, novel_id: int, title: str) -> BookGraph:
        """The novel's graph in the shape of :mod:`kgworker.observe.graph_html`."""
        async with self.engine.connect() as conn:
            node_rows = (await conn.execute(
                select(nodes).where(nodes.c.novel_id == novel_id)
            )).mappings().all()
            edge_rows = (await conn.execute(
                select(edges).where(edges.c.novel_id == novel_id)
            )).mappings().all()
        props = {(r["label"], r["key"]): json.loads(r["props"]) for r in node_rows}
        number = {key: p.get("chapter_number") for (label, key), p in props.items()
                  if label == "Chapter"}
        graph = BookGraph(title, chapter_titles={
            int(p["chapter_number"]): str(p.get("title") or "")
            for (label, _), p in props.items() if label == "Chapter"
        })
        appears: dict[tuple[str, str], tuple[set[int], int]] = {}
        for e in edge_rows:
            if e["type"] == "APPEARS_IN" and number.get(e["dst_key"]) is not None:
                seen, count = appears.get((e["src_label"], e["src_key"]), (set(), 0))
                seen.add(int(number[e["dst_key"]]))
                appears[(e["src_label"], e["src_key"])] = (
                    seen, count + int(json.loads(e["props"]).get("count", 1)))
        for (label, key), p in sorted(props.items()):
            if label in ENTITY_LABELS:
                chapters, mentions = appears.get((label, key), (set(), 1))
                graph.nodes.append(GraphNode(f"{label}:{key}", label.lower(), key,
                                             sorted(chapters), str(p.get("description") or ""),
                                             max(mentions, 1)))
            elif label == "Event":
                chapter = p.get("chapter_number")
                graph.nodes.append(GraphNode(f"Event:{key}", "event", str(p.get("name") or key),
                                             [int(chapter)] if chapter is not None else [],
                                             str(p.get("description") or "")))
        for e in edge_rows:
            if e["type"] not in RELATION_EDGES:
                continue
            p = json.loads(e["props"])
            spans: list[int]
            if "chapter_ids" in p:
                spans = sorted({int(number[str(c)]) for c in p["chapter_ids"]
                                   if number.get(str(c)) is not None})
            else:
                event = e["src_key"] if e["src_label"] == "Event" else e["dst_key"]
                found = props.get(("Event", event), {}).get("chapter_number")
                spans = [int(found)] if found is not None else []
            graph.edges.append(GraphEdge(
                f"{e['src_label']}:{e['src_key']}", f"{e['dst_label']}:{e['dst_key']}",
                e["type"], spans, str(p.get("description") or p.get("role") or ""),
                float(p.get("strength") or 0.5)))
        return graph


class _Chapter:
    """One chapter's writes inside one transaction (read, merge in Python, upsert)."""

    def __init__(self, conn: AsyncConnection, graph: ChapterGraph) -> None:
        self.conn, self.g = conn, graph
        self.result = WriteResult()

    async def write(self) -> WriteResult:
        g = self.g
        await self._merge_node("Novel", str(g.novel_id),
                               {"title": g.novel_title, "author": g.novel_author})
        await self._merge_node("Chapter", str(g.chapter_id), dict(g.chapter_props))
        for label, rows in (("Character", g.characters), ("Location", g.locations),
                            ("Organization", g.organizations)):
            for row in rows:
                await self._entity(label, row)
        for row in g.events:
            await self._merge_node("Event", row["id"], dict(row["props"]))
        for rel_type, rows in g.character_relations.items():
            for row in rows:
                await self._relation(rel_type, row)
        for row in g.participations:
            await self._edge("PARTICIPATES_IN", ("Character", row["character"]),
                             ("Event", row["event_id"]), lambda old, r=row: {**old, **r["props"]})
        for row in g.occurrences:
            await self._edge("OCCURS_IN", ("Event", row["event_id"]), ("Location", row["location"]),
                             lambda old, r=row: {**old, **r["props"]})
        return self.result

    async def _get(self, table: Table, key: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        row = (await self.conn.execute(
            select(table.c.props, table.c.task_id).where(
                and_(*(table.c[k] == v for k, v in key.items())))
        )).first()
        if row is None:
            return {}, []
        return json.loads(row.props), json.loads(row.task_id)

    async def _put(self, table: Table, key: dict[str, Any], props: dict[str, Any],
                   tasks: list[int]) -> None:
        values = {**key,
                  "props": json.dumps(props, ensure_ascii=False, sort_keys=True),
                  "task_id": json.dumps(_sorted_add(tasks, self.g.task_id))}
        stmt = sqlite_insert(table).values(**values)
        await self.conn.execute(stmt.on_conflict_do_update(
            index_elements=list(key), set_={k: stmt.excluded[k] for k in ("props", "task_id")}))

    async def _merge_node(self, label: str, key: str, new: dict[str, Any]) -> None:
        ident = {"novel_id": self.g.novel_id, "label": label, "key": key}
        old, tasks = await self._get(nodes, ident)
        await self._put(nodes, ident, {**old, **{k: v for k, v in new.items() if v is not None}},
                        tasks)

    async def _entity(self, label: str, row: dict[str, Any]) -> None:
        ident = {"novel_id": self.g.novel_id, "label": label, "key": row["name"]}
        old, tasks = await self._get(nodes, ident)
        props = _chapter_ordered(old, row)
        if label == "Character":
            score = float(row["protagonist_score"])
            best = float(old.get("protagonist_score", -1))
            if score > best or (score == best and row["chapter_number"]
                                >= old.get("protagonist_chapter", -1)):
                props.update(protagonist_score=score,
                             protagonist_reasons=row["protagonist_reasons"],
                             protagonist_evidence=row["protagonist_evidence"],
                             protagonist_chapter=row["chapter_number"])
            props["is_protagonist"] = bool(old.get("is_protagonist")) or row["is_protagonist"]
        await self._put(nodes, ident, props, tasks)
        await self._edge("APPEARS_IN", (label, row["name"]), ("Chapter", str(self.g.chapter_id)),
                         lambda old_edge: {**old_edge, "count": row["count"]}, count=False)

    async def _relation(self, rel_type: str, row: dict[str, Any]) -> None:
        def merge(old: dict[str, Any]) -> dict[str, Any]:
            props = _chapter_ordered(old, row)
            props["chapter_ids"] = _sorted_add(old.get("chapter_ids", []), row["chapter_id"])
            return props

        await self._edge(rel_type, ("Character", row["source"]), ("Character", row["target"]),
                         merge)

    async def _edge(self, etype: str, src: tuple[str, str], dst: tuple[str, str],
                    merge: Any, *, count: bool = True) -> None:
        for label, key in (src, dst):
            found = {"novel_id": self.g.novel_id, "label": label, "key": key}
            if not (await self._get(nodes, found))[1]:
                if count:
                    self.result.dropped["relation_end_not_in_graph"] = (
                        self.result.dropped.get("relation_end_not_in_graph", 0) + 1)
                return
        ident = {"novel_id": self.g.novel_id, "type": etype, "src_label": src[0], "src_key": src[1],
                 "dst_label": dst[0], "dst_key": dst[1]}
        old, tasks = await self._get(edges, ident)
        await self._put(edges, ident, merge(old), tasks)
        if count:
            self.result.relations_written += 1


def _chapter_ordered(old: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """First/last chapter numbers; the row's properties win when its chapter is the latest."""
    number = int(row["chapter_number"])
    newer = old.get("last_chapter_number", -1) <= number
    props = {**old, **row["props"]} if newer else dict(old)
    first = old.get("first_chapter_number")
    props["first_chapter_number"] = first if first is not None and first < number else number
    props["last_chapter_number"] = number if newer else old["last_chapter_number"]
    return props
