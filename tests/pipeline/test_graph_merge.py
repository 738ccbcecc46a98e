"""The merge of a graph group (pure): each node and relation once, carrying what writing the
chapters one by one in group order leaves."""

from __future__ import annotations

from typing import Any

import pytest

from kgworker.domain.graph_merge import merge_group
from kgworker.domain.graph_rows import ChapterGraph


def _graph(number: int, score: float, *, task_id: int = 1, novel_id: int = 7) -> ChapterGraph:
    props: dict[str, Any] = {"description": f"in {number}"}
    character = {"name": "林风", "chapter_number": number, "count": number, "props": props,
                 "protagonist_score": score, "is_protagonist": score >= 80,
                 "protagonist_reasons": [f"r{number}"], "protagonist_evidence": [f"e{number}"]}
    friend = {**character, "name": "苏晴", "protagonist_score": 0.0, "is_protagonist": False}
    relation = {"source": "林风", "target": "苏晴", "chapter_id": 100 + number,
                "chapter_number": number, "props": {"description": f"said in {number}"}}
    return ChapterGraph(
        novel_id=novel_id, task_id=task_id, chapter_id=100 + number, novel_title="书",
        novel_author=None, chapter_props={"chapter_number": number},
        characters=[character, friend], character_relations={"FRIEND": [relation]})


def test_a_shuffled_group_merges_as_chapter_order_decides() -> None:
    group = merge_group([_graph(3, 90.0), _graph(1, 50.0, task_id=2), _graph(2, 90.0),
                         _graph(4, 60.0)])
    lin, su = group.entities["Character"]
    assert (lin["name"], su["name"]) == ("林风", "苏晴")
    assert (lin["first_chapter_number"], lin["last_chapter_number"]) == (1, 4)
    assert lin["props"] == {"description": "in 4"} and lin["task_ids"] == [1, 2]
    # the greatest score, and of the tied 90s the later chapter (3), not the last written
    assert (lin["protagonist_score"], lin["protagonist_chapter"]) == (90.0, 3)
    assert lin["protagonist_evidence"] == ["e3"] and lin["is_protagonist"] is True
    assert sorted((a["chapter_id"], a["count"]) for a in lin["appears"]) == [
        (101, 1), (102, 2), (103, 3), (104, 4)]
    friend = group.relations["FRIEND"]
    assert len(friend.rows) == 1 and friend.rows[0]["i"] == 0
    assert friend.rows[0]["chapter_ids"] == [101, 102, 103, 104]
    assert friend.rows[0]["props"] == {"description": "said in 4"}
    assert sorted(friend.owners[0]) == [101, 102, 103, 104]
    assert group.task_ids == [1, 2] and [c["id"] for c in group.chapters] == [101, 102, 103, 104]


def test_a_group_holds_one_novel() -> None:
    with pytest.raises(ValueError, match="one novel"):
        merge_group([_graph(1, 1.0), _graph(2, 1.0, novel_id=8)])
