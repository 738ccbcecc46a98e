"""One book's graph read back from Neo4j (and its aliases from MySQL) for the graph page.

The fleet page links every task to ``/graph/<novel_id>``, which renders
:mod:`kgworker.observe.graph_html` from what the workers wrote (docs/chaishu-compat.md §3).
Read-only: every query runs in a read transaction, the novel id is the only input and it
is a query parameter; labels and relation types come from the fixed lists below. Each
query starts from a label and ``novel_id`` (both indexed), never from all nodes.
"""

from __future__ import annotations

from typing import Any

from neo4j import AsyncDriver, RoutingControl
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.observe.graph_html import RELATION_TYPES, BookGraph, GraphEdge, GraphNode

ENTITY_LABELS = ("Character", "Location", "Organization")
#: Character → Character relations (the seven types of docs/chaishu-compat.md §3).
CHARACTER_RELATIONS = [t for t in RELATION_TYPES if t not in ("PARTICIPATES_IN", "OCCURS_IN")]

_NOVEL = "MATCH (n:Novel {id: $novel}) RETURN n.title AS title"
_CHAPTERS = ("MATCH (c:Chapter {novel_id: $novel})"
             " RETURN c.id AS id, c.chapter_number AS number, c.title AS title")
_ENTITIES = (
    "MATCH (n:{label} {{novel_id: $novel}})"
    " OPTIONAL MATCH (n)-[a:APPEARS_IN]->(c:Chapter)"
    " RETURN n.name AS name, n.description AS description,"
    " collect(DISTINCT c.chapter_number) AS chapters,"
    " sum(CASE WHEN a IS NULL THEN 0 ELSE coalesce(a.count, 1) END) AS mentions"
)
_EVENTS = ("MATCH (e:Event {novel_id: $novel}) RETURN e.id AS id, e.name AS name,"
           " e.description AS description, e.chapter_number AS chapter")
_RELATIONS = (
    "MATCH (a:Character {novel_id: $novel})-[r]->(b:Character {novel_id: $novel})"
    " WHERE type(r) IN $types"
    " RETURN a.name AS src, b.name AS dst, type(r) AS type, r.chapter_ids AS chapter_ids,"
    " r.description AS description, r.strength AS strength"
)
_PARTICIPATIONS = (
    "MATCH (a:Character {novel_id: $novel})-[r:PARTICIPATES_IN]->(e:Event {novel_id: $novel})"
    " RETURN a.name AS src, e.id AS dst, coalesce(r.role, r.description) AS description,"
    " e.chapter_number AS chapter"
)
_OCCURRENCES = (
    "MATCH (e:Event {novel_id: $novel})-[r:OCCURS_IN]->(l:Location {novel_id: $novel})"
    " RETURN e.id AS src, l.name AS dst, r.description AS description,"
    " e.chapter_number AS chapter"
)


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strength(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.5


async def read_book_graph(
    driver: AsyncDriver, novel_id: int, *, database: str | None = None, title: str | None = None
) -> BookGraph | None:
    """The novel's graph, or None when Neo4j has no such novel."""

    async def rows(query: str, **params: Any) -> list[dict[str, Any]]:
        records, _, _ = await driver.execute_query(
            query, novel=novel_id, database_=database, routing_=RoutingControl.READ, **params
        )
        return [record.data() for record in records]

    novel = await rows(_NOVEL)
    if not novel:
        return None
    chapters = await rows(_CHAPTERS)
    number = {str(c["id"]): _number(c["number"]) for c in chapters}
    graph = BookGraph(str(title or novel[0]["title"] or f"novel {novel_id}"), chapter_titles={
        n: str(c["title"] or "") for c in chapters if (n := _number(c["number"])) is not None
    })
    for label in ENTITY_LABELS:
        for row in await rows(_ENTITIES.format(label=label)):
            graph.nodes.append(GraphNode(
                f"{label}:{row['name']}", label.lower(), str(row["name"]),
                sorted(n for n in row["chapters"] if _number(n) is not None),
                str(row["description"] or ""), max(int(row["mentions"] or 0), 1)))
    for row in await rows(_EVENTS):
        chapter = _number(row["chapter"])
        graph.nodes.append(GraphNode(f"Event:{row['id']}", "event", str(row["name"] or row["id"]),
                                     [chapter] if chapter is not None else [],
                                     str(row["description"] or "")))
    for row in await rows(_RELATIONS, types=CHARACTER_RELATIONS):
        spans = sorted({n for c in row["chapter_ids"] or []
                        if (n := number.get(str(c))) is not None})
        graph.edges.append(GraphEdge(f"Character:{row['src']}", f"Character:{row['dst']}",
                                     str(row["type"]), spans, str(row["description"] or ""),
                                     _strength(row["strength"])))
    for query, kind, src, dst in ((_PARTICIPATIONS, "PARTICIPATES_IN", "Character", "Event"),
                                  (_OCCURRENCES, "OCCURS_IN", "Event", "Location")):
        for row in await rows(query):
            chapter = _number(row["chapter"])
            graph.edges.append(GraphEdge(f"{src}:{row['src']}", f"{dst}:{row['dst']}", kind,
                                         [chapter] if chapter is not None else [],
                                         str(row["description"] or "")))
    return graph


async def add_aliases(engine: AsyncEngine, graph: BookGraph, novel_id: int) -> None:
    """Each node's other names, from the novel's alias table, for the page's node panel."""
    labels = {"character": "Character", "location": "Location", "organization": "Organization"}
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT entity_type, alias, canonical FROM kgworker_entity_aliases"
            " WHERE novel_id = :novel AND kind = 'alias' ORDER BY id"), {"novel": novel_id})).all()
    nodes = {n.id: n for n in graph.nodes}
    for etype, alias, canonical in rows:
        node = nodes.get(f"{labels.get(etype, '')}:{canonical}")
        if node is not None and alias != node.name and alias not in node.aliases:
            node.aliases.append(alias)
