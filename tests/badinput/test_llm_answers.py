"""Hostile and malformed model answers.

The parser: any text gives a parsed answer or ``UnparseableAnswer``/``TruncatedAnswer``
(never another exception), also for deeply nested and 10 MB answers; any JSON object
gives a ``ChapterExtraction``. The graph writer: names, descriptions, place types and
relation types carrying quotes, backticks, newlines, Cypher keywords and injection
attempts are written as data (or dropped), and no node, label, relationship type or
deletion the injection tried to cause exists afterwards — even when the extraction skips
the parser's validation and goes straight to the writer.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from neo4j import AsyncDriver

from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    Character,
    CharacterRelation,
    Event,
    EventRelation,
    ExtractionOptions,
    LocationRelation,
    Place,
)
from kgworker.domain.graph_rows import prepare_chapter
from kgworker.llm.parsing import (
    TruncatedAnswer,
    UnparseableAnswer,
    load_answer,
    validate_extraction,
)
from kgworker.llm.prompts import Schema
from kgworker.store.graph_writer import GraphWriter

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=25,
)
KEYS = st.sampled_from(["characters", "locations", "organizations", "events",
                        "character_relationships", "event_relationships",
                        "location_relationships", "name", "from", "to", "relation"])


def schema() -> Schema:
    return Schema.from_options(ExtractionOptions(provider="x")) \
        if hasattr(Schema, "from_options") else Schema()  # type: ignore[call-arg]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_load_answer_any_text(raw: str) -> None:
    with contextlib.suppress(UnparseableAnswer, TruncatedAnswer):
        load_answer(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSON, max_size=7), st.text(max_size=50))
def test_validate_extraction_any_json(data: dict[str, Any], text: str) -> None:
    result = validate_extraction(data, schema(), text)
    assert isinstance(result, ChapterExtraction)


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deeply_nested_answer(depth: int, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    for raw in (opening * depth + closing * depth, opening * depth):
        with contextlib.suppress(UnparseableAnswer, TruncatedAnswer):
            load_answer(raw)


def test_ten_megabyte_answer() -> None:
    people = [{"name": f"人物{i}", "description": "x" * 200} for i in range(45_000)]
    raw = json.dumps({"characters": people}, ensure_ascii=False)
    assert len(raw.encode()) >= 10_000_000
    started = time.monotonic()
    parsed = load_answer(raw)
    result = validate_extraction(parsed.data, schema(), "人物1 人物2")
    assert time.monotonic() - started < 60
    assert {c.name for c in result.characters} <= {f"人物{i}" for i in range(45_000)}
    garbage = "{" + "x" * 10_000_000
    with pytest.raises((UnparseableAnswer, TruncatedAnswer)):
        load_answer(garbage)


#: What the injections would create or delete if they ran as Cypher.
PWN = "Pwned"
HOSTILE = [
    f"张三'}}) MERGE (:{PWN} {{x: 1}}) //",
    f'李四"}}) CREATE (p:{PWN}) RETURN p //',
    "王五`) DETACH DELETE n //",
    "赵六\nMATCH (n) DETACH DELETE n",
    f"孙七\\'}}) CALL {{ CREATE (:{PWN}) }} //",
    "周八 UNION MATCH (n) SET n.pwned = true",
    "吴九${injection}{{ }}",
]
HOSTILE_TYPES = [
    f"KNOWS]->(b) CREATE (:{PWN}) //",
    f"FRIEND`]->(b) MERGE (x:{PWN}) WITH x MATCH (m) DETACH DELETE m //",
    "ENEMY\nDETACH DELETE a",
    f"{PWN}_REL",
]


async def test_injection_through_the_graph_writer(neo4j_driver: AsyncDriver,
                                                  novel_id: int) -> None:
    sentinel = f"sentinel-{novel_id}"
    await neo4j_driver.execute_query("CREATE (:KgtSentinel {id: $id})", id=sentinel)
    try:
        people = [Character(name=n, description=f"MATCH (n) DETACH DELETE n {n}")
                  for n in HOSTILE]
        places = [Place(name=f"长安城`{i}", type=f"城市`) CREATE (:{PWN})//", description=n)
                  for i, n in enumerate(HOSTILE[:3])]
        orgs = [Place(name=f"青云门'{i}", type=f"门派:{PWN}") for i in range(2)]
        events = [Event(name=f"夜袭'}}) DETACH DELETE n //{i}", participants=HOSTILE[:2])
                  for i in range(2)]
        rels = [CharacterRelation.model_validate(
            {"from": HOSTILE[i], "to": HOSTILE[i + 1], "relation": t,
             "description": "'}) DETACH DELETE n //"})
            for i, t in enumerate(HOSTILE_TYPES)]
        extraction = ChapterExtraction(
            characters=people, locations=places, organizations=orgs, events=events,
            character_relationships=rels,
            event_relationships=[EventRelation(character=HOSTILE[0], event=events[0].name,
                                               role=f"`:{PWN}")],
            location_relationships=[LocationRelation(event=events[0].name,
                                                     location=places[0].name)],
        )
        chapter = ChapterInput(novel_id=novel_id, chapter_id=novel_id + 1, chapter_number=1,
                               title=f"第一章'}}) CREATE (:{PWN})//", content="\n".join(HOSTILE),
                               task_id=1)
        graph = prepare_chapter(chapter, extraction, ExtractionOptions(provider="openai"),
                                novel_title=f"书`) CREATE (:{PWN})//", novel_author="'\"`")
        writer = GraphWriter(neo4j_driver)
        await writer.ensure_schema()
        await writer.write_chapter(graph)
        await writer.write_chapter(graph)  # idempotent, also with hostile keys

        # nothing the injections wanted exists
        got, _, _ = await neo4j_driver.execute_query(f"MATCH (n:{PWN}) RETURN count(n) AS c")
        assert got[0]["c"] == 0
        got, _, _ = await neo4j_driver.execute_query(
            "MATCH (n) WHERE n.pwned IS NOT NULL RETURN count(n) AS c")
        assert got[0]["c"] == 0
        got, _, _ = await neo4j_driver.execute_query("CALL db.labels() YIELD label RETURN label")
        assert not [r["label"] for r in got if PWN in r["label"] or "`" in r["label"]]
        got, _, _ = await neo4j_driver.execute_query(
            "MATCH ()-[r]->() WHERE r.novel_id = $n OR startNode(r).novel_id = $n "
            "RETURN DISTINCT type(r) AS t", n=novel_id)
        types = {r["t"] for r in got}
        assert all(t.isidentifier() and t.upper() == t for t in types), types
        assert not [t for t in types if PWN.upper() in t.upper() and t != "PWNED_REL"], types
        got, _, _ = await neo4j_driver.execute_query(
            "MATCH (s:KgtSentinel {id: $id}) RETURN count(s) AS c", id=sentinel)
        assert got[0]["c"] == 1  # nothing was deleted
        # the hostile names are data: stored verbatim (or in display form), findable
        got, _, _ = await neo4j_driver.execute_query(
            "MATCH (c:Character {novel_id: $n}) RETURN c.name AS name", n=novel_id)
        names = {r["name"] for r in got}
        assert len(names) >= len(HOSTILE) - 1, names
        assert any("DETACH DELETE" in n for n in names), names
    finally:
        await neo4j_driver.execute_query("MATCH (s:KgtSentinel {id: $id}) DELETE s", id=sentinel)
