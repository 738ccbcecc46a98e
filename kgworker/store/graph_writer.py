"""Neo4j writes of the chaishu graph (docs/chaishu-compat.md §3): a chapter, or a group of
one book's chapters (:mod:`.graph_batches`), per transaction.

Why this shape:

* **UNWIND batches that MERGE on the graph keys** (docs/chaishu-compat.md §3) — one
  statement per label or edge type, never one per entity (the old worker and LightRAG
  paid a round trip per entity).
* **One managed transaction per chapter or group** (``execute_write``): the driver retries
  it on TransientError, e.g. a deadlock between two nodes writing the same characters of one
  book; the whole chapter (group) lands or nothing does.
* **A group in one pass**: the group's rows are merged first so that each node and relation
  comes once (:mod:`kgworker.domain.graph_merge`), then every statement UNWINDs them all:
  a group of N chapters costs the ~8 statements of one chapter, not 8N round trips.
* **Order-independent and idempotent**: chapters of a book finish in any order on any node,
  and a chapter may be written twice (crash before the MySQL commit, retry). So every
  property is either *set* from the chapter with the highest chapter_number that mentions
  the entity (``last_chapter_number`` decides), a max/min/or of values, or a sorted,
  duplicate-free list (``task_id``, ``chapter_ids``). Counts are set, never added.
* **Everything matched within novel_id**; extracted text only reaches Cypher as
  parameters, and relation types only as one of seven allow-listed literals.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString, Protocol, TypeVar

from neo4j import AsyncDriver, AsyncManagedTransaction, AsyncTransaction
from neo4j.exceptions import ClientError, DriverError, Neo4jError

from kgworker.domain.extraction import CHARACTER_RELATION_TYPES
from kgworker.domain.graph_merge import merge_group
from kgworker.domain.graph_rows import ChapterGraph

log = logging.getLogger(__name__)

Tx = AsyncManagedTransaction | AsyncTransaction
A = TypeVar("A")
R = TypeVar("R")
#: Quick tries of a transaction that deadlocks, before the driver's own (slow) retry.
DEADLOCK_RETRIES = 6
DEADLOCK_CODE = "Neo.TransientError.Transaction.DeadlockDetected"

SCHEMA: tuple[LiteralString, ...] = (
    "CREATE CONSTRAINT kg_character_key IF NOT EXISTS"
    " FOR (n:Character) REQUIRE (n.name, n.novel_id) IS UNIQUE",
    "CREATE CONSTRAINT kg_location_key IF NOT EXISTS"
    " FOR (n:Location) REQUIRE (n.name, n.novel_id) IS UNIQUE",
    "CREATE CONSTRAINT kg_organization_key IF NOT EXISTS"
    " FOR (n:Organization) REQUIRE (n.name, n.novel_id) IS UNIQUE",
    "CREATE CONSTRAINT kg_event_id IF NOT EXISTS FOR (n:Event) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT kg_chapter_id IF NOT EXISTS FOR (n:Chapter) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT kg_novel_id IF NOT EXISTS FOR (n:Novel) REQUIRE n.id IS UNIQUE",
    "CREATE INDEX kg_character_name IF NOT EXISTS FOR (n:Character) ON (n.name)",
    "CREATE INDEX kg_character_novel IF NOT EXISTS FOR (n:Character) ON (n.novel_id)",
    "CREATE INDEX kg_location_name IF NOT EXISTS FOR (n:Location) ON (n.name)",
    "CREATE INDEX kg_location_novel IF NOT EXISTS FOR (n:Location) ON (n.novel_id)",
    "CREATE INDEX kg_organization_name IF NOT EXISTS FOR (n:Organization) ON (n.name)",
    "CREATE INDEX kg_organization_novel IF NOT EXISTS FOR (n:Organization) ON (n.novel_id)",
    "CREATE INDEX kg_event_name IF NOT EXISTS FOR (n:Event) ON (n.name)",
    "CREATE INDEX kg_event_novel IF NOT EXISTS FOR (n:Event) ON (n.novel_id)",
    "CREATE INDEX kg_event_chapter IF NOT EXISTS FOR (n:Event) ON (n.chapter_id)",
    "CREATE INDEX kg_chapter_novel IF NOT EXISTS FOR (n:Chapter) ON (n.novel_id)",
)

ENTITY_LABELS: tuple[LiteralString, ...] = ("Character", "Location", "Organization", "Event",
                                            "Chapter")


def _sorted_union(target: LiteralString, values: LiteralString) -> LiteralString:
    """Cypher for ``target`` as a sorted, duplicate-free list with ``values`` added."""
    return (
        f"reduce(acc = coalesce({target}, []), x IN {values} |"
        " [y IN acc WHERE y < x] + [x] + [y IN acc WHERE y > x])"
    )


#: Chapter-ordered properties of a merged row (docs: :mod:`kgworker.domain.graph_merge`):
#: its ``props`` win when its last chapter is the latest the node has seen.
def _newer(node: LiteralString) -> LiteralString:
    return (
        f"WITH {node} AS n, row,"
        f" coalesce({node}.last_chapter_number, -1) <= row.last_chapter_number AS newer"
        " SET n.first_chapter_number = CASE WHEN n.first_chapter_number IS NOT NULL"
        " AND n.first_chapter_number < row.first_chapter_number"
        " THEN n.first_chapter_number ELSE row.first_chapter_number END,"
        " n.last_chapter_number = CASE WHEN newer THEN row.last_chapter_number"
        " ELSE n.last_chapter_number END,"
        " n.novel_id = $novel_id, n.task_id = " + _sorted_union("n.task_id", "row.task_ids")
        + " FOREACH (_ IN CASE WHEN newer THEN [1] ELSE [] END | SET n += row.props)"
    )


_PROTAGONIST: LiteralString = (
    " WITH n, row, coalesce(n.protagonist_score, -1) AS old"
    " FOREACH (_ IN CASE WHEN row.protagonist_score > old"
    " OR (row.protagonist_score = old"
    " AND row.protagonist_chapter >= coalesce(n.protagonist_chapter, -1)) THEN [1] ELSE [] END |"
    " SET n.protagonist_score = row.protagonist_score,"
    " n.protagonist_reasons = row.protagonist_reasons,"
    " n.protagonist_evidence = row.protagonist_evidence,"
    " n.protagonist_chapter = row.protagonist_chapter)"
    " SET n.is_protagonist = coalesce(n.is_protagonist, false) OR row.is_protagonist"
)

#: One APPEARS_IN per chapter of the merged row (each row of ``row.appears`` its own edge).
_APPEARS: LiteralString = (
    " WITH n, row UNWIND row.appears AS ap MATCH (ch:Chapter {id: ap.chapter_id})"
    " MERGE (n)-[a:APPEARS_IN]->(ch)"
    " SET a.count = ap.count, a.novel_id = $novel_id,"
    " a.task_id = " + _sorted_union("a.task_id", "ap.task_ids")
)


def _entity_query(label: LiteralString, extra: LiteralString = "") -> LiteralString:
    return (
        "UNWIND $rows AS row"
        f" MERGE (n:{label} {{name: row.name, novel_id: $novel_id}})"
        " ON CREATE SET n.created_at = datetime() SET n.updated_at = datetime() "
        + _newer("n") + extra + _APPEARS
    )


ENTITY_QUERIES: dict[str, LiteralString] = {
    "Character": _entity_query("Character", _PROTAGONIST),
    "Location": _entity_query("Location"),
    "Organization": _entity_query("Organization"),
}

#: Every transaction of a book writes its Novel node first, on purpose: that write lock
#: makes the groups of one book on several nodes take turns in Neo4j instead of
#: deadlocking on shared characters; other books proceed in parallel.
_NOVEL: LiteralString = (
    "MERGE (n:Novel {id: $novel_id}) ON CREATE SET n.created_at = datetime()"
    " SET n.title = $title, n.author = $author, n.updated_at = datetime(),"
    " n.task_id = " + _sorted_union("n.task_id", "$task_ids")
)


def _by_id(label: LiteralString) -> LiteralString:
    return (
        f"UNWIND $rows AS row MERGE (n:{label} {{id: row.id}})"
        " ON CREATE SET n.created_at = datetime()"
        " SET n += row.props, n.novel_id = $novel_id, n.updated_at = datetime(),"
        " n.task_id = " + _sorted_union("n.task_id", "row.task_ids")
    )


_CHAPTERS = _by_id("Chapter")
_EVENTS = _by_id("Event")
#: Edge statements return the index of each row whose ends were both found.
_EDGE_PROPS: LiteralString = (
    " SET r += row.props, r.novel_id = $novel_id,"
    " r.task_id = " + _sorted_union("r.task_id", "row.task_ids") + " RETURN row.i AS i"
)
_PARTICIPATES: LiteralString = (
    "UNWIND $rows AS row"
    " MATCH (a:Character {name: row.character, novel_id: $novel_id})"
    " MATCH (b:Event {id: row.event_id})"
    " MERGE (a)-[r:PARTICIPATES_IN]->(b)" + _EDGE_PROPS
)
_OCCURS: LiteralString = (
    "UNWIND $rows AS row"
    " MATCH (a:Event {id: row.event_id})"
    " MATCH (b:Location {name: row.location, novel_id: $novel_id})"
    " MERGE (a)-[r:OCCURS_IN]->(b)" + _EDGE_PROPS
)


def _character_relation_query(rel_type: LiteralString) -> LiteralString:
    return (
        "UNWIND $rows AS row"
        " MATCH (a:Character {name: row.source, novel_id: $novel_id})"
        " MATCH (b:Character {name: row.target, novel_id: $novel_id})"
        f" MERGE (a)-[r:{rel_type}]->(b)"
        " ON CREATE SET r.created_at = datetime() "
        + _newer("r")
        + " SET n.chapter_ids = " + _sorted_union("n.chapter_ids", "row.chapter_ids")
        + " RETURN row.i AS i"
    )


#: Relation type → its statement; the only way a type reaches Cypher (no parameters there).
CHARACTER_RELATION_QUERIES: dict[str, LiteralString] = {
    "FRIEND": _character_relation_query("FRIEND"),
    "ENEMY": _character_relation_query("ENEMY"),
    "LOVES": _character_relation_query("LOVES"),
    "HATES": _character_relation_query("HATES"),
    "KNOWS": _character_relation_query("KNOWS"),
    "LEADS": _character_relation_query("LEADS"),
    "FOLLOWS": _character_relation_query("FOLLOWS"),
}
assert tuple(CHARACTER_RELATION_QUERIES) == CHARACTER_RELATION_TYPES

def _delete_edges(label: LiteralString) -> LiteralString:
    return (
        f"MATCH (:{label} {{novel_id: $novel_id}})-[r]-() WHERE $task_id IN r.task_id"
        " WITH DISTINCT r LIMIT $limit"
        " SET r.task_id = [x IN r.task_id WHERE x <> $task_id]"
        " WITH r, size(r.task_id) = 0 AS empty"
        " FOREACH (_ IN CASE WHEN empty THEN [1] ELSE [] END | DELETE r)"
        " RETURN count(*) AS changed"
    )


def _delete_nodes(label: LiteralString, key: LiteralString) -> LiteralString:
    return (
        f"MATCH (n:{label} {{{key}: $novel_id}}) WHERE $task_id IN n.task_id"
        " WITH n LIMIT $limit SET n.task_id = [x IN n.task_id WHERE x <> $task_id]"
        " WITH n, size(n.task_id) = 0 AS empty"
        " FOREACH (_ IN CASE WHEN empty THEN [1] ELSE [] END | DETACH DELETE n)"
        " RETURN count(*) AS changed"
    )


#: Edges first (they may outlive a node's task), then nodes; each processes ``$limit`` rows
#: per run and is repeated until a run processes fewer.
_DELETE_STEPS: tuple[LiteralString, ...] = (
    *(_delete_edges(label) for label in ENTITY_LABELS),
    *(_delete_nodes(label, "novel_id") for label in ENTITY_LABELS),
    _delete_nodes("Novel", "id"),
)


class GraphSink(Protocol):
    """What the pipeline needs from a graph store (Neo4j here; a stand-in in demos)."""

    async def ensure_schema(self) -> None: ...

    async def write_chapter(self, graph: ChapterGraph) -> WriteResult: ...

    async def delete_task(self, task_id: int, novel_id: int) -> int: ...


@dataclass
class WriteResult:
    """Edges actually written, and what the database refused (ends not found)."""

    relations_written: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class GraphWriter:
    """Writes prepared chapters (:class:`ChapterGraph`) and deletes a task's data."""

    def __init__(
        self, driver: AsyncDriver, *, database: str | None = None, batch_size: int = 1000
    ) -> None:
        self.driver = driver
        self.database = database
        self.batch_size = batch_size

    async def ensure_schema(self) -> None:
        """Constraints and indexes IF NOT EXISTS; a refused one is logged, not fatal
        (an old database may hold duplicates the old worker created)."""
        async with self.driver.session(database=self.database) as session:
            for statement in SCHEMA:
                try:
                    await session.run(statement)
                except ClientError as exc:
                    log.warning("graph schema statement refused: %s (%s)", statement, exc.message)

    async def write_chapter(self, graph: ChapterGraph) -> WriteResult:
        return await self._in_transaction(self._write, graph)

    async def write_chapters(self, graphs: Sequence[ChapterGraph]) -> list[WriteResult]:
        """Several chapters in one transaction (group commit: :mod:`.graph_batches`)."""
        return await self._in_transaction(self._write_all, graphs)

    async def _in_transaction(
        self, work: Callable[[Tx, A], Awaitable[R]], arg: A
    ) -> R:
        """``work`` in one write transaction; a deadlock is retried at once (jittered
        milliseconds), another retryable error by the driver's own retry, and an error the
        driver would not retry is raised as it is (the work is not run again for nothing).

        Why: two nodes writing one book's groups can deadlock on its shared nodes, and the
        driver waits ~1, 2, 4, 8 s between retries — a node that keeps losing sits idle
        for seconds while the other takes the book. Retrying a deadlock quickly is what
        the database asks ("try again"); the writes are idempotent, so a retry writes the
        same graph.
        """
        async with self.driver.session(database=self.database) as session:
            for attempt in range(DEADLOCK_RETRIES):
                try:
                    async with await session.begin_transaction() as tx:
                        result = await work(tx, arg)
                        await tx.commit()
                        return result
                except (Neo4jError, DriverError) as exc:
                    if getattr(exc, "code", None) != DEADLOCK_CODE:
                        if not exc.is_retryable():
                            raise
                        break  # e.g. the server went away: the driver's retry below decides
                    await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
            return await session.execute_write(work, arg)

    async def _write_all(self, tx: Tx, graphs: Sequence[ChapterGraph]) -> list[WriteResult]:
        """The chapters of one novel in one pass: their rows merged so that each node and
        relation comes once (:func:`~kgworker.domain.graph_merge.merge_group`), then one
        statement per label and edge type, whatever the number of chapters."""
        if not graphs:
            return []
        group = merge_group(graphs)
        common = {"novel_id": group.novel_id}
        await (await tx.run(_NOVEL, common, task_ids=group.task_ids, title=group.novel_title,
                            author=group.novel_author)).consume()
        await self._run_rows(tx, _CHAPTERS, common, group.chapters)
        for label, rows in group.entities.items():
            await self._run_rows(tx, ENTITY_QUERIES[label], common, rows)
        await self._run_rows(tx, _EVENTS, common, group.events)
        results = {g.chapter_id: WriteResult() for g in graphs}
        edges = [(CHARACTER_RELATION_QUERIES[t], group.relations[t])
                 for t in CHARACTER_RELATION_TYPES]
        edges += [(_PARTICIPATES, group.participations), (_OCCURS, group.occurrences)]
        for query, edge_rows in edges:
            for batch in self._batches(edge_rows.rows):
                written = {int(r["i"]) async for r in await tx.run(query, common, rows=batch)}
                for row in batch:
                    for chapter_id in edge_rows.owners[row["i"]]:
                        result = results[chapter_id]
                        if row["i"] in written:
                            result.relations_written += 1
                        else:
                            result.dropped["relation_end_not_in_graph"] = (
                                result.dropped.get("relation_end_not_in_graph", 0) + 1)
        return [results[g.chapter_id] for g in graphs]

    async def _run_rows(
        self, tx: Tx, query: LiteralString, common: dict[str, Any], rows: list[dict[str, Any]]
    ) -> None:
        for batch in self._batches(rows):
            await (await tx.run(query, common, rows=batch)).consume()

    def _batches(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        size = self.batch_size
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    async def _write(self, tx: Tx, graph: ChapterGraph) -> WriteResult:
        return (await self._write_all(tx, [graph]))[0]

    async def delete_task(self, task_id: int, novel_id: int, *, limit: int = 5000) -> int:
        """docs/chaishu-compat.md §3: remove ``task_id`` from every list of the novel's graph and
        delete what no task holds any more (edges too, then nodes with DETACH DELETE)."""
        changed = 0
        async with self.driver.session(database=self.database) as session:
            for statement in _DELETE_STEPS:
                while True:
                    result = await session.run(
                        statement, novel_id=novel_id, task_id=task_id, limit=limit
                    )
                    record = await result.single()
                    count = int(record["changed"]) if record is not None else 0
                    changed += count
                    if count < limit:
                        break
        return changed
