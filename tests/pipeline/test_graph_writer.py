"""The Neo4j writer on a real server: contract keys and shapes, idempotence, order
independence, novels kept apart, allow-listed relation types, delete-by-task, and batching
(a chapter is a handful of UNWIND statements whatever its size)."""

from __future__ import annotations

from typing import Any

from neo4j import AsyncDriver

from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionOptions
from kgworker.domain.graph_rows import event_id, prepare_chapter
from kgworker.store.graph_writer import GraphWriter
from tests.pipeline.graphprint import fingerprint
from tests.support.fixed import extract_text, sample_chapter

OPTIONS = ExtractionOptions(provider="openai")


def chapter(novel_id: int, number: int, task_id: int = 1, text: str | None = None) -> Any:
    content = text if text is not None else sample_chapter(number)
    ci = ChapterInput(novel_id=novel_id, chapter_id=novel_id + number, chapter_number=number,
                      title=f"第{number}章", content=content, task_id=task_id)
    return prepare_chapter(ci, extract_text(content, number), OPTIONS, novel_title="书")


async def count(driver: AsyncDriver, query: str, **params: Any) -> int:
    records, _, _ = await driver.execute_query(query, **params)
    return int(records[0][0])


async def test_writes_contract_shapes(neo4j_driver: AsyncDriver, novel_id: int) -> None:
    writer = GraphWriter(neo4j_driver)
    await writer.ensure_schema()
    text = "林风与苏晴在长安城结为好友。那一日，长安城发生了比武大会，林风和苏晴都在场。青云门。"
    graph = chapter(novel_id, 1, text=text)
    result = await writer.write_chapter(graph)
    assert result.relations_written == graph.relation_count == 5  # FRIEND, KNOWS, 2+1 event
    records, _, _ = await neo4j_driver.execute_query(
        "MATCH (c:Character {novel_id: $n}) RETURN c ORDER BY c.name", n=novel_id)
    lin = dict(records[0]["c"])
    assert lin["name"] == "林风" and lin["task_id"] == [1] and lin["confidence"] == 0.9
    assert lin["is_protagonist"] is True and lin["protagonist_score"] == 90.0
    eid = event_id(novel_id, novel_id + 1, "比武大会")
    assert await count(neo4j_driver, "MATCH (:Character {name: '林风', novel_id: $n})"
                       "-[r:FRIEND]->(:Character {name: '苏晴', novel_id: $n})"
                       " WHERE r.chapter_ids = [$c] AND r.first_chapter_number = 1"
                       " RETURN count(r)", n=novel_id, c=novel_id + 1) == 1
    assert await count(neo4j_driver, "MATCH (:Character {novel_id: $n})-[r:PARTICIPATES_IN]->"
                       "(:Event {id: $e})-[:OCCURS_IN]->(:Location {name: '长安城'})"
                       " RETURN count(r)", n=novel_id, e=eid) == 2
    assert await count(neo4j_driver, "MATCH (:Location {name: '长安城', novel_id: $n})"
                       "-[a:APPEARS_IN]->(:Chapter {id: $c}) WHERE a.count = 2"
                       " RETURN count(a)", n=novel_id, c=novel_id + 1) == 1
    assert await count(neo4j_driver, "MATCH (o:Organization {novel_id: $n}) RETURN count(o)",
                       n=novel_id) == 1
    constraints, _, _ = await neo4j_driver.execute_query("SHOW CONSTRAINTS YIELD name")
    assert {"kg_character_key", "kg_event_id", "kg_novel_id"} <= {r["name"] for r in constraints}


async def test_idempotent_and_order_independent(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    writer = GraphWriter(neo4j_driver)
    other = novel_id + 500_000
    try:
        for n in (1, 2, 3, 4):
            await writer.write_chapter(chapter(novel_id, n))
        forward = await fingerprint(neo4j_driver, novel_id, normalize=True)
        for n in (3, 1, 3, 4, 2):  # twice, and in another order: the same graph
            await writer.write_chapter(chapter(novel_id, n))
        assert await fingerprint(neo4j_driver, novel_id, normalize=True) == forward
        for n in (4, 2, 3, 1):  # another book, same text, reverse order
            await writer.write_chapter(chapter(other, n))
        assert await fingerprint(neo4j_driver, other, normalize=True) == forward
    finally:
        await neo4j_driver.execute_query(
            "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id) DETACH DELETE n",
            id=other)


async def test_same_name_in_two_books_stays_apart(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    writer = GraphWriter(neo4j_driver)
    other = novel_id + 700_000
    text = "林风与苏晴在长安城结为好友。"
    try:
        await writer.write_chapter(chapter(novel_id, 1, text=text))
        await writer.write_chapter(chapter(other, 1, text=text))
        assert await count(neo4j_driver, "MATCH (c:Character {name: '林风'})"
                           " WHERE c.novel_id IN [$a, $b] RETURN count(c)",
                           a=novel_id, b=other) == 2
        assert await count(neo4j_driver, "MATCH (a:Character)-[r]-(b:Character)"
                           " WHERE a.novel_id = $a AND b.novel_id <> $a RETURN count(r)",
                           a=novel_id) == 0
    finally:
        await neo4j_driver.execute_query(
            "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id) DETACH DELETE n",
            id=other)


async def test_relation_types_allow_list_and_cypher_text_as_data(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    evil = "x'}) DETACH DELETE n //"
    extraction = ChapterExtraction.model_validate({
        "characters": [{"name": "甲"}, {"name": evil}],
        "character_relationships": [
            {"from": "甲", "to": evil, "relation": "师父"},
            {"from": evil, "to": "甲", "relation": "KNOWS]->() DETACH DELETE n //"},
            {"from": "甲", "to": evil, "relation": "lover"},
            {"from": "甲", "to": "无名", "relation": "FRIEND"},
        ],
    })
    ci = ChapterInput(novel_id=novel_id, chapter_id=novel_id + 1, chapter_number=1,
                      title="t", content="甲", task_id=1)
    graph = prepare_chapter(ci, extraction, OPTIONS)
    assert graph.dropped == {"relation_type_unmapped": 1, "relation_missing_end": 1}
    await GraphWriter(neo4j_driver).write_chapter(graph)
    records, _, _ = await neo4j_driver.execute_query(
        "MATCH (a:Character {novel_id: $n})-[r]->(b:Character) RETURN a.name, type(r), b.name"
        " ORDER BY type(r)", n=novel_id)
    assert [tuple(r) for r in records] == [("甲", "LEADS", evil), ("甲", "LOVES", evil)]


async def test_delete_by_task_keeps_what_another_task_wrote(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    writer = GraphWriter(neo4j_driver)
    shared = "林风与苏晴在长安城结为好友。"
    await writer.write_chapter(chapter(novel_id, 1, task_id=1, text=shared))
    await writer.write_chapter(chapter(novel_id, 1, task_id=2, text=shared))
    await writer.write_chapter(chapter(novel_id, 2, task_id=2, text="王虎独自走过青云山。"))
    records, _, _ = await neo4j_driver.execute_query(
        "MATCH (c:Character {name: '林风', novel_id: $n}) RETURN c.task_id", n=novel_id)
    assert records[0][0] == [1, 2]  # sorted, no duplicates
    await writer.delete_task(2, novel_id)
    names, _, _ = await neo4j_driver.execute_query(
        "MATCH (c:Character {novel_id: $n}) RETURN c.name, c.task_id ORDER BY c.name",
        n=novel_id)
    assert [tuple(r) for r in names] == [("林风", [1]), ("苏晴", [1])]
    assert await count(neo4j_driver, "MATCH (:Character {novel_id: $n})-[r:FRIEND]->()"
                       " RETURN count(r)", n=novel_id) == 1
    assert await count(neo4j_driver, "MATCH (c:Chapter {novel_id: $n}) RETURN count(c)",
                       n=novel_id) == 1
    await writer.delete_task(1, novel_id)
    assert await count(neo4j_driver, "MATCH (n) WHERE n.novel_id = $n OR (n:Novel AND"
                       " n.id = $n) RETURN count(n)", n=novel_id) == 0


async def test_a_big_chapter_is_a_few_statements(
    neo4j_driver: AsyncDriver, novel_id: int
) -> None:
    """UNWIND batches: 600 characters in one chapter are not 600 queries."""
    rows = [{"name": f"角色{i}"} for i in range(600)]
    extraction = ChapterExtraction.model_validate({"characters": rows})
    ci = ChapterInput(novel_id=novel_id, chapter_id=novel_id + 1, chapter_number=1,
                      title="t", content="", task_id=1)
    statements: list[str] = []
    writer = GraphWriter(neo4j_driver, batch_size=250)
    original = writer._write

    async def spy(tx: Any, graph: Any) -> Any:
        real_run = tx.run

        async def run(query: str, *args: Any, **kwargs: Any) -> Any:
            statements.append(query)
            return await real_run(query, *args, **kwargs)

        tx.run = run
        return await original(tx, graph)

    writer._write = spy  # type: ignore[method-assign]
    await writer.write_chapter(prepare_chapter(ci, extraction, OPTIONS))
    assert await count(neo4j_driver, "MATCH (c:Character {novel_id: $n}) RETURN count(c)",
                       n=novel_id) == 600
    assert len(statements) <= 2 + 3 + 6  # novel, chapter, 3 character batches, the rest
