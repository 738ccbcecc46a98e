"""Where the fake model's answers come from: a pluggable ``answerer``.

An answerer takes an :class:`AnswerRequest` (which call of the flow, the chapter text of
the prompt) and returns the *full* extraction as a dict in the docs/chaishu-compat.md §4 shapes
(characters, locations, organizations, events and the three relation lists).
:func:`answer_for_kind` cuts that down to what the call asked for, so a gold answerer only
needs to know the truth about a piece of text, not the call protocol.

The default answerer is deterministic and reads the text with simple regexes, which the
test texts follow: a character is a 2-3 character name right after punctuation and before
a speech verb (``。张三说``), a place follows 在/到/去/回/往/进 and ends in 城/山/镇/村...,
an organization follows 入/加入 and ends in 派/门/帮/会/宗/教; characters in one sentence
KNOW each other; the most mentioned character is the protagonist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from kgworker.llm.prompts import RELATION_KEYS, parse_prompt

CATEGORIES = ("characters", "locations", "organizations", "events")


@dataclass(frozen=True)
class AnswerRequest:
    kind: str  # single | entities | protagonist | relations | "" (unknown prompt)
    text: str  # the chapter text between the prompt's fences
    prompt: str  # the whole user message
    model: str
    style: str  # openai | anthropic | ollama

    @classmethod
    def from_prompt(cls, prompt: str, model: str, style: str) -> AnswerRequest:
        kind, text = parse_prompt(prompt)
        return cls(kind, text, prompt, model, style)


Answerer = Callable[[AnswerRequest], dict[str, Any]]

_NAME = re.compile(r"(?<![\u4e00-\u9fff])([\u4e00-\u9fff]{2,3}?)(?=说|道|问|笑|答|喊|叹)")
_PLACE = re.compile(r"(?<=[在到去回往进])([\u4e00-\u9fff]{1,3}?(?:城|山|镇|村|府|宫|寺|湖|岛|谷))")
_ORG = re.compile(r"(?<=入)([\u4e00-\u9fff]{1,3}?(?:派|门|帮|会|宗|教))")
_SENTENCE = re.compile(r"[^。！？!?]+[。！？!?]?")


def default_answerer(request: AnswerRequest) -> dict[str, Any]:
    text = request.text
    names = list(dict.fromkeys(_NAME.findall(text)))
    counts = {n: text.count(n) for n in names}
    top = max(names, key=lambda n: (counts[n], -names.index(n))) if names else None
    characters = [
        {
            "name": n,
            "description": f"{n}在本章出场",
            "is_protagonist": n == top,
            "protagonist_score": 90 if n == top else 30,
        }
        for n in names
    ]
    places = list(dict.fromkeys(_PLACE.findall(text)))
    orgs = list(dict.fromkeys(_ORG.findall(text)))
    relations = []
    seen: set[tuple[str, str]] = set()
    for sentence in _SENTENCE.findall(text):
        present = sorted((sentence.find(n), n) for n in names if n in sentence)
        for (_, a), (_, b) in pairwise(present):
            if (a, b) not in seen and a != b:
                seen.add((a, b))
                relations.append({"from": a, "to": b, "relation": "KNOWS", "strength": 0.5})
    return {
        "characters": characters,
        "locations": [{"name": p, "type": "地点"} for p in places],
        "organizations": [{"name": o, "type": "组织"} for o in orgs],
        "events": [],
        "character_relationships": relations,
        "event_relationships": [],
        "location_relationships": [],
    }


def answer_for_kind(kind: str, full: dict[str, Any]) -> dict[str, Any]:
    """The part of a full extraction that call ``kind`` asks for."""
    if kind == "entities":
        return {k: full.get(k, []) for k in CATEGORIES}
    if kind == "relations":
        return {k: full.get(k, []) for k in RELATION_KEYS}
    if kind == "protagonist":
        candidates = [
            {
                "name": c["name"],
                "score": c.get("protagonist_score", 0),
                "reasons": ["出场最多"],
                "evidence": [],
            }
            for c in full.get("characters", [])
            if c.get("protagonist_score", 0) >= 50
        ]
        return {
            "protagonist_candidates": candidates,
            "narrative_perspective": "第三人称",
            "chapter_focus": "",
        }
    return full
