"""Merge the rows of a group of one book's chapters so that each node and each relation
appears once per statement (pure code; the group commit is in
:mod:`kgworker.store.graph_batches`).

Why: a group written as one UNWIND per label is a few statements instead of a few per
chapter, but Neo4j does not apply the rows of one statement one after another: two rows of
one character would both compare against the value the node had before the statement, and
the order-dependent properties (the newest chapter's props, the protagonist evidence) could
be lost. Merged here first, every row of a statement touches a different node, and the
merged row carries exactly what writing the chapters one by one in group order leaves:

* ``first_chapter_number`` the least, ``last_chapter_number`` the greatest, and ``props``
  those of the last row (in group order) at the greatest chapter number;
* the protagonist evidence of the greatest (score, chapter), the later row on a tie;
  ``is_protagonist`` if any row says so;
* ``task_ids`` / ``chapter_ids`` the sorted union; an APPEARS_IN per chapter (``appears``).

Edge rows carry an index ``i`` that the statement returns for each edge it wrote, and
:attr:`EdgeRows.owners` says which chapters each merged row came from, so every chapter
still learns how many of its relations were written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kgworker.domain.extraction import CHARACTER_RELATION_TYPES
from kgworker.domain.graph_rows import ChapterGraph

__all__ = ["EdgeRows", "GroupRows", "merge_group"]


@dataclass
class EdgeRows:
    """One edge statement's merged rows; ``owners[i]`` the chapter of each source row."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    owners: list[list[int]] = field(default_factory=list)


@dataclass
class GroupRows:
    """The parameters of one group's statements, each node and relation once."""

    novel_id: int
    novel_title: str
    novel_author: str | None
    task_ids: list[int]
    chapters: list[dict[str, Any]]
    entities: dict[str, list[dict[str, Any]]]
    events: list[dict[str, Any]]
    relations: dict[str, EdgeRows]
    participations: EdgeRows
    occurrences: EdgeRows


def _union(values: list[int], more: Iterable[int]) -> list[int]:
    return sorted({*values, *more})


def _ordered_row(seen: dict[str, Any] | None, fields: dict[str, Any], number: int,
                 props: dict[str, Any], task_id: int) -> dict[str, Any]:
    """The merged row after one more row at chapter ``number``: a new one from ``fields``
    (its keys) when ``seen`` is None; first/last chapter, newest props and tasks updated."""
    if seen is None:
        seen = {**fields, "first_chapter_number": number, "last_chapter_number": number,
                "props": props, "task_ids": []}
    seen["first_chapter_number"] = min(seen["first_chapter_number"], number)
    if number >= seen["last_chapter_number"]:
        seen["last_chapter_number"], seen["props"] = number, props
    seen["task_ids"] = _union(seen["task_ids"], [task_id])
    return seen


#: A character's protagonist fields before its first row (any score beats it).
_NO_PROTAGONIST = {"is_protagonist": False, "protagonist_score": -1.0, "protagonist_chapter": -1}


def _merge_entities(graphs: Sequence[ChapterGraph], part: str,
                    protagonist: bool) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    appears: dict[str, dict[int, dict[str, Any]]] = {}
    for graph in graphs:
        for row in getattr(graph, part):
            name, number = row["name"], row["chapter_number"]
            fields = {"name": name, **(_NO_PROTAGONIST if protagonist else {})}
            seen = merged[name] = _ordered_row(merged.get(name), fields, number, row["props"],
                                               graph.task_id)
            if protagonist:
                seen["is_protagonist"] = seen["is_protagonist"] or row["is_protagonist"]
                score = row["protagonist_score"]
                if (score, number) >= (seen["protagonist_score"], seen["protagonist_chapter"]):
                    seen.update(protagonist_score=score, protagonist_chapter=number,
                                protagonist_reasons=row["protagonist_reasons"],
                                protagonist_evidence=row["protagonist_evidence"])
            old = appears.setdefault(name, {}).get(graph.chapter_id)
            appears[name][graph.chapter_id] = {
                "chapter_id": graph.chapter_id, "count": row["count"],
                "task_ids": _union(old["task_ids"] if old else [], [graph.task_id]),
            }
    return [{**merged[name], "appears": list(appears[name].values())}
            for name in sorted(merged)]


def _merge_relations(graphs: Sequence[ChapterGraph], rel_type: str) -> EdgeRows:
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    owners: dict[tuple[str, str], list[int]] = {}
    for graph in graphs:
        for row in graph.character_relations.get(rel_type, ()):
            key, number = (row["source"], row["target"]), row["chapter_number"]
            seen = merged[key] = _ordered_row(
                merged.get(key), {"source": key[0], "target": key[1], "chapter_ids": []},
                number, row["props"], graph.task_id)
            owners.setdefault(key, [])
            seen["chapter_ids"] = _union(seen["chapter_ids"], [row["chapter_id"]])
            owners[key].append(graph.chapter_id)
    return _indexed(merged, owners)


def _merge_links(graphs: Sequence[ChapterGraph], part: str, ends: tuple[str, str]) -> EdgeRows:
    """Edges to an event (its id names its chapter): merged only if a chapter comes twice."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    owners: dict[tuple[str, str], list[int]] = {}
    for graph in graphs:
        for row in getattr(graph, part):
            key = (row[ends[0]], row[ends[1]])
            old = merged.get(key)
            merged[key] = {**row, "task_ids": _union(old["task_ids"] if old else [],
                                                     [graph.task_id])}
            owners.setdefault(key, []).append(graph.chapter_id)
    return _indexed(merged, owners)


def _indexed(merged: dict[tuple[str, str], dict[str, Any]],
             owners: dict[tuple[str, str], list[int]]) -> EdgeRows:
    """Rows in key order (concurrent writers lock in one order), each with its index."""
    keys = sorted(merged)
    return EdgeRows(rows=[{**merged[k], "i": i} for i, k in enumerate(keys)],
                    owners=[owners[k] for k in keys])


def _by_key(graphs: Sequence[ChapterGraph], rows_of: str, key: str) -> list[dict[str, Any]]:
    """Chapter or event rows by id (the last of a repeated one wins, tasks united)."""
    merged: dict[Any, dict[str, Any]] = {}
    for graph in graphs:
        rows = ([{"id": graph.chapter_id, "props": graph.chapter_props}]
                if rows_of == "chapter" else getattr(graph, rows_of))
        for row in rows:
            old = merged.get(row[key])
            merged[row[key]] = {**row, "task_ids": _union(old["task_ids"] if old else [],
                                                          [graph.task_id])}
    return [merged[k] for k in sorted(merged)]


def merge_group(graphs: Sequence[ChapterGraph]) -> GroupRows:
    """The group's rows, each node and relation once; ``graphs`` all of one novel."""
    last = graphs[-1]  # chapter by chapter, the last one written sets the title
    if any(g.novel_id != last.novel_id for g in graphs):
        raise ValueError("a graph group holds the chapters of one novel")
    return GroupRows(
        novel_id=last.novel_id, novel_title=last.novel_title, novel_author=last.novel_author,
        task_ids=sorted({g.task_id for g in graphs}),
        chapters=_by_key(graphs, "chapter", "id"),
        entities={
            "Character": _merge_entities(graphs, "characters", protagonist=True),
            "Location": _merge_entities(graphs, "locations", protagonist=False),
            "Organization": _merge_entities(graphs, "organizations", protagonist=False),
        },
        events=_by_key(graphs, "events", "id"),
        relations={t: _merge_relations(graphs, t) for t in CHARACTER_RELATION_TYPES},
        participations=_merge_links(graphs, "participations", ("character", "event_id")),
        occurrences=_merge_links(graphs, "occurrences", ("event_id", "location")),
    )
