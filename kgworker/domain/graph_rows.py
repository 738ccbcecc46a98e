"""Turn one chapter's extraction into the parameter rows of the graph writer (pure code).

Kept apart from the Cypher so it can be tested without a database, and so everything the
writer receives is already decided: names trimmed and de-duplicated, relation types mapped
onto the allowed seven, relations whose ends are not entities of this chapter dropped (and
counted) — which also makes the written graph independent of the order chapters finish in.
The config toggles and type lists of ``knowledge_graph_configs`` are honoured here (the
old worker ignored them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionOptions
from kgworker.domain.relation_types import normalize_relation_type

CONFIDENCE = {"ai": 0.9, "rule": 0.7}

_ENTITY_KINDS = {
    "characters": {"character", "characters", "person", "people", "persons", "人物", "角色"},
    "locations": {"location", "locations", "place", "places", "地点", "地名", "场所", "地理位置"},
    "organizations": {"organization", "organizations", "org", "orgs", "组织", "门派", "势力",
                      "机构", "组织机构"},
    "events": {"event", "events", "事件"},
}


@dataclass
class ChapterGraph:
    """Everything one chapter writes, as Cypher parameters."""

    novel_id: int
    task_id: int
    chapter_id: int
    novel_title: str
    novel_author: str | None
    chapter_props: dict[str, Any]
    characters: list[dict[str, Any]] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)
    organizations: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    character_relations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    participations: list[dict[str, Any]] = field(default_factory=list)
    occurrences: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def entity_count(self) -> int:
        return len(self.characters) + len(self.locations) + len(self.organizations) + len(
            self.events
        )

    @property
    def relation_count(self) -> int:
        return (
            sum(len(rows) for rows in self.character_relations.values())
            + len(self.participations)
            + len(self.occurrences)
        )

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count


def event_id(novel_id: int, chapter_id: int, name: str) -> str:
    """docs/chaishu-compat.md §3: ``{novel_id}_{chapter_id}_{first 8 hex of md5(name)}``."""
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{novel_id}_{chapter_id}_{digest[:8]}"


def enabled_kinds(options: ExtractionOptions) -> set[str]:
    """Entity kinds the config allows (all when its list is empty or unrecognised)."""
    if not options.enable_entity_extraction:
        return set()
    wanted = {str(t).strip().casefold() for t in options.entity_types}
    kinds = {kind for kind, words in _ENTITY_KINDS.items() if wanted & words}
    return kinds or set(_ENTITY_KINDS)


def enabled_relation_types(options: ExtractionOptions) -> set[str] | None:
    """Allowed character relation types from the config; None = no restriction."""
    mapped = {normalize_relation_type(str(t)) for t in options.relation_types}
    mapped.discard(None)
    return {t for t in mapped if t is not None} or None


def map_relation_types(extraction: ChapterExtraction) -> ChapterExtraction:
    """Character relation types mapped onto the allowed seven *before* entity resolution.

    The resolver keeps only the seven literal types, so an answer saying 师父 or 朋友 would
    lose its relations there; unmappable ones are dropped here, counted under the same
    reason :func:`prepare_chapter` uses (``relation_type_unmapped``).
    """
    kept = []
    unmapped = 0
    for rel in extraction.character_relationships:
        rel_type = normalize_relation_type(rel.relation)
        if rel_type is None:
            unmapped += 1
        else:
            kept.append(rel if rel.relation == rel_type
                        else rel.model_copy(update={"relation": rel_type}))
    dropped = dict(extraction.dropped)
    if unmapped:
        dropped["relation_type_unmapped"] = dropped.get("relation_type_unmapped", 0) + unmapped
    return extraction.model_copy(update={"character_relationships": kept, "dropped": dropped})


def _mentions(content: str, names: Iterable[str]) -> int:
    return max(1, sum(content.count(name) for name in dict.fromkeys(names) if name))


def prepare_chapter(
    chapter: ChapterInput,
    extraction: ChapterExtraction,
    options: ExtractionOptions,
    *,
    novel_title: str = "",
    novel_author: str | None = None,
    word_count: int | None = None,
) -> ChapterGraph:
    by = extraction.extracted_by
    base = {"extracted_by": by, "confidence": CONFIDENCE.get(by, 0.9)}
    number = chapter.chapter_number
    graph = ChapterGraph(
        novel_id=chapter.novel_id, task_id=chapter.task_id, chapter_id=chapter.chapter_id,
        novel_title=novel_title, novel_author=novel_author,
        chapter_props={
            "title": chapter.title, "chapter_number": number,
            "word_count": word_count if word_count is not None else len(chapter.content),
            "content": chapter.content,
        },
        dropped=dict(extraction.dropped),
    )
    kinds = enabled_kinds(options)
    content = chapter.content
    for reason in _ENTITY_KINDS:
        if reason not in kinds:
            graph.drop(f"{reason}_disabled", len(getattr(extraction, reason)))

    characters: dict[str, dict[str, Any]] = {}
    if "characters" in kinds:
        for c in extraction.characters:
            if not c.name or c.name in characters:
                continue
            score = float(c.protagonist_score)
            characters[c.name] = {
                "name": c.name, "chapter_number": number,
                "count": _mentions(content, [c.name, *c.aliases]),
                "props": {**base, "description": c.description, "traits": list(c.traits),
                          "title": c.title},
                "protagonist_score": score, "is_protagonist": c.is_protagonist or score >= 80,
                "protagonist_reasons": list(c.protagonist_reasons),
                "protagonist_evidence": list(c.protagonist_evidence),
            }
    graph.characters = list(characters.values())
    places: dict[str, dict[str, dict[str, Any]]] = {"locations": {}, "organizations": {}}
    for kind, seen in places.items():
        if kind not in kinds:
            continue
        for p in getattr(extraction, kind):
            if p.name and p.name not in seen:
                seen[p.name] = {
                    "name": p.name, "chapter_number": number,
                    "count": _mentions(content, [p.name, *p.aliases]),
                    "props": {**base, "description": p.description, "type": p.type},
                }
    graph.locations = list(places["locations"].values())
    graph.organizations = list(places["organizations"].values())

    events: dict[str, str] = {}
    if "events" in kinds:
        for e in extraction.events:
            if not e.name or e.name in events:
                continue
            events[e.name] = event_id(chapter.novel_id, chapter.chapter_id, e.name)
            graph.events.append({"id": events[e.name], "props": {
                **base, "name": e.name, "chapter_id": chapter.chapter_id, "chapter_number": number,
                "novel_id": chapter.novel_id, "description": e.description,
                "importance": e.importance, "participants": list(e.participants),
            }})

    if options.enable_relation_extraction:
        _relations(graph, extraction, options, characters, events, places["locations"], base)
    else:
        graph.drop("relations_disabled", extraction.relation_count)
    _sort_rows(graph)
    return graph


def _sort_rows(graph: ChapterGraph) -> None:
    """Rows in key order: concurrent chapters of a book then lock shared nodes in the same
    order, which keeps Neo4j deadlocks (and their retries) rare."""
    for rows in (graph.characters, graph.locations, graph.organizations):
        rows.sort(key=lambda r: r["name"])
    graph.events.sort(key=lambda r: r["id"])
    for rows in graph.character_relations.values():
        rows.sort(key=lambda r: (r["source"], r["target"]))
    graph.character_relations = dict(sorted(graph.character_relations.items()))
    graph.participations.sort(key=lambda r: (r["character"], r["event_id"]))
    graph.occurrences.sort(key=lambda r: (r["event_id"], r["location"]))


def _relations(
    graph: ChapterGraph,
    extraction: ChapterExtraction,
    options: ExtractionOptions,
    characters: dict[str, Any],
    events: dict[str, str],
    locations: dict[str, Any],
    base: dict[str, Any],
) -> None:
    allowed = enabled_relation_types(options)
    seen: set[tuple[str, str, str]] = set()
    for rel in extraction.character_relationships:
        rel_type = normalize_relation_type(rel.relation)
        if rel_type is None:
            graph.drop("relation_type_unmapped")
        elif allowed is not None and rel_type not in allowed:
            graph.drop("relation_type_disabled")
        elif rel.source not in characters or rel.target not in characters:
            graph.drop("relation_missing_end")
        elif rel.source == rel.target:
            graph.drop("relation_self")
        elif (rel.source, rel.target, rel_type) not in seen:
            seen.add((rel.source, rel.target, rel_type))
            graph.character_relations.setdefault(rel_type, []).append({
                "source": rel.source, "target": rel.target, "chapter_id": graph.chapter_id,
                "chapter_number": graph.chapter_props["chapter_number"],
                "props": {**base, "description": rel.description, "strength": rel.strength},
            })
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for er in extraction.event_relationships:
        if er.character not in characters or er.event not in events:
            graph.drop("relation_missing_end")
            continue
        pairs.setdefault((er.character, events[er.event]), {
            "character": er.character, "event_id": events[er.event],
            "props": {**base, "role": er.role, "description": er.description},
        })
    for e in extraction.events:
        for name in e.participants:
            if name in characters and e.name in events:
                pairs.setdefault((name, events[e.name]), {
                    "character": name, "event_id": events[e.name],
                    "props": {**base, "role": "", "description": ""},
                })
    graph.participations = list(pairs.values())
    occurs: dict[tuple[str, str], dict[str, Any]] = {}
    for lr in extraction.location_relationships:
        if lr.event not in events or lr.location not in locations:
            graph.drop("relation_missing_end")
            continue
        occurs.setdefault((events[lr.event], lr.location), {
            "event_id": events[lr.event], "location": lr.location,
            "props": {**base, "description": lr.description},
        })
    graph.occurrences = list(occurs.values())
