"""Group commit on a real Neo4j: chapters of one book that finish together share one
transaction, the graph is the one written chapter by chapter, a refused chapter fails alone,
and a caller that gives up takes its chapter out of the group."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from neo4j import AsyncDriver
from neo4j.exceptions import Neo4jError

from kgworker.store.graph_batches import GroupCommitWriter
from kgworker.store.graph_writer import GraphWriter
from tests.pipeline.graphprint import fingerprint
from tests.pipeline.test_graph_writer import chapter, count


async def _chapters(driver: AsyncDriver, novel_id: int) -> set[int]:
    records, _, _ = await driver.execute_query(
        "MATCH (c:Chapter {novel_id: $n}) RETURN c.chapter_number AS n", n=novel_id)
    return {int(r["n"]) for r in records}


async def test_a_group_writes_the_graph_that_single_chapters_write(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    writer = GraphWriter(neo4j_driver)
    await writer.ensure_schema()
    grouped = GroupCommitWriter(writer, max_group=5)
    other = novel_id + 500_000
    try:
        # gather starts all twelve before the book's writer first runs: groups of 5, 5, 2
        results = await asyncio.gather(*(grouped.write_chapter(chapter(novel_id, n))
                                          for n in range(1, 13)))
        assert (grouped.stats.chapters, grouped.stats.transactions) == (12, 3)
        assert grouped.stats.largest == 5 and grouped.stats.fallbacks == 0
        for n in range(12, 0, -1):  # the same book, one transaction per chapter, reversed
            single = await writer.write_chapter(chapter(other, n))
            assert single.relations_written == results[n - 1].relations_written
        assert await fingerprint(neo4j_driver, novel_id, normalize=True) == await fingerprint(
            neo4j_driver, other, normalize=True)
        assert grouped.idle  # the book's writer ended
    finally:
        await neo4j_driver.execute_query(
            "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id) DETACH DELETE n",
            id=other)


async def test_a_refused_chapter_fails_alone(neo4j_driver: AsyncDriver, novel_id: int) -> None:
    grouped = GroupCommitWriter(GraphWriter(neo4j_driver))
    bad = chapter(novel_id, 2)
    bad.chapter_props["nested"] = {"maps are not property values": 1}  # Neo4j refuses it
    outcomes: list[Any] = await asyncio.gather(
        grouped.write_chapter(chapter(novel_id, 1)), grouped.write_chapter(bad),
        grouped.write_chapter(chapter(novel_id, 3)), return_exceptions=True)
    assert isinstance(outcomes[1], Neo4jError), outcomes
    assert not isinstance(outcomes[0], BaseException) and outcomes[0].relations_written > 0
    assert not isinstance(outcomes[2], BaseException) and outcomes[2].relations_written > 0
    assert grouped.stats.fallbacks == 1 and grouped.stats.transactions == 4  # 1 group + 3
    assert await _chapters(neo4j_driver, novel_id) == {1, 3}


async def test_a_cancelled_caller_leaves_the_group(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    grouped = GroupCommitWriter(GraphWriter(neo4j_driver))
    first = asyncio.create_task(grouped.write_chapter(chapter(novel_id, 1)))
    second = asyncio.create_task(grouped.write_chapter(chapter(novel_id, 2)))
    # one turn of the loop: both callers have queued their chapter; the book's writer,
    # created by the first, runs after this test's next step
    await asyncio.sleep(0)
    assert grouped.waiting(novel_id) == 2
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert (await first).relations_written > 0
    assert grouped.stats.chapters == 1
    assert await _chapters(neo4j_driver, novel_id) == {1}
    assert await count(neo4j_driver, "MATCH (n:Novel {id: $n}) RETURN count(n)",
                       n=novel_id) == 1


async def test_one_group_keeps_what_chapter_order_decides(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    """Chapters of one group arrive out of order and share characters, with tied and
    falling protagonist scores and per-chapter descriptions: the group leaves the graph
    that writing them one by one in chapter order leaves (newest props, best evidence)."""
    writer = GraphWriter(neo4j_driver)
    await writer.ensure_schema()
    scores = {1: 50.0, 2: 90.0, 3: 70.0, 4: 90.0, 5: 90.0, 6: 60.0}
    other = novel_id + 500_000

    def graph(novel: int, n: int) -> Any:
        g = chapter(novel, n, task_id=1 + n % 2)  # two tasks of one novel in one group
        for row in [*g.characters, *g.locations]:
            row["props"] = {**row["props"], "description": f"seen in {n}"}
        for row in g.characters:
            row["protagonist_score"] = scores[n]
            row["protagonist_evidence"] = [f"evidence {n}"]
        for rows in g.character_relations.values():
            for row in rows:
                row["props"] = {**row["props"], "description": f"said in {n}"}
        return g

    try:
        order = [4, 1, 6, 2, 5, 3]
        grouped = await writer.write_chapters([graph(novel_id, n) for n in order])
        singles = [await writer.write_chapter(graph(other, n)) for n in sorted(order)]
        assert [r.relations_written for r in grouped] == [
            singles[n - 1].relations_written for n in order]
        assert await fingerprint(neo4j_driver, novel_id, normalize=True) == await fingerprint(
            neo4j_driver, other, normalize=True)
        expected: dict[str, tuple[str, int]] = {}  # name -> (newest description, best chapter)
        for n in sorted(order):
            for row in graph(novel_id, n).characters:
                best = expected.get(row["name"], ("", 0))[1]
                if best == 0 or scores[n] >= scores[best]:
                    best = n
                expected[row["name"]] = (f"seen in {n}", best)
        records, _, _ = await neo4j_driver.execute_query(
            "MATCH (c:Character {novel_id: $n}) RETURN c.name AS name, c.description AS d,"
            " c.protagonist_chapter AS p, c.protagonist_evidence AS e", n=novel_id)
        assert {r["name"]: (r["d"], r["p"]) for r in records} == expected
        assert all(r["e"] == [f"evidence {r['p']}"] for r in records)
        assert len({best for _, best in expected.values()}) > 1  # the order mattered
    finally:
        await neo4j_driver.execute_query(
            "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id) DETACH DELETE n",
            id=other)
