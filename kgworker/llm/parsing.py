"""From a model's raw answer to validated extraction items, repairing what can be repaired.

Models wrap JSON in ``<think>`` blocks, code fences and chatty preambles, leave trailing
commas, use single quotes or stop mid-object. We strip the wrapping, try strict JSON, then
``json-repair``; a cut answer (``finish_reason = length``) is not repaired but reported as
:class:`TruncatedAnswer`, because repairing it would silently lose its tail: the caller
splits the chunk and asks again. Items are validated one by one, so one bad item costs
that item, not the chunk; every pruned item is counted by reason in ``dropped`` and logged.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import json_repair
from pydantic import BaseModel, ValidationError

from kgworker.domain.extraction import (
    ChapterExtraction,
    Character,
    CharacterRelation,
    Event,
    EventRelation,
    LocationRelation,
    Place,
    _merge_by_key,
)
from kgworker.llm.prompts import RELATION_KEYS, Schema, normalize_relation

log = logging.getLogger(__name__)

_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
#: A homonym's qualifier, 陈默（巡警）: the bare name is what occurs in the text.
_QUALIFIER = re.compile(r"\s*[（(][^（）()]*[）)]$")
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)\s*(```|$)", re.S)
_ITEM_MODELS: dict[str, type[BaseModel]] = {
    "characters": Character,
    "locations": Place,
    "organizations": Place,
    "events": Event,
}
_KNOWN_KEYS = {
    *_ITEM_MODELS,
    *RELATION_KEYS,
    "protagonist_candidates",
    "narrative_perspective",
    "chapter_focus",
}


class TruncatedAnswer(Exception):
    """The answer was cut at max_tokens: split the chunk and ask again."""


class UnparseableAnswer(Exception):
    """No JSON object could be recovered; ``reason`` says what the answer looked like."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ParsedAnswer:
    data: dict[str, Any]
    #: Repairs applied, e.g. ["think", "fence", "preamble", "json_repair"].
    repairs: list[str] = field(default_factory=list)


_SPACE = re.compile(r"\s+")


def default_name_key(name: str) -> str:
    """NFKC (full/half width), case and whitespace folded: for "does it occur in the text"."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", name)).casefold()


#: json_repair's time grows with the square of the text (about 30 s for 1 MB, on the
#: event loop): broken answers longer than this are re-asked instead of repaired. Real
#: answers are far smaller (max_tokens), and valid JSON of any size still parses.
REPAIR_MAX_CHARS = 100_000


def load_answer(raw: str, finish_reason: str = "stop") -> ParsedAnswer:
    """The JSON object in ``raw``. Raises TruncatedAnswer or UnparseableAnswer."""
    if finish_reason == "length":
        raise TruncatedAnswer("answer cut at max_tokens")
    repairs: list[str] = []
    text = raw.strip()
    if _THINK.search(text):
        text, repairs = _THINK.sub("", text).strip(), [*repairs, "think"]
    fenced = _FENCE.search(text)
    if fenced:
        text, repairs = fenced.group(1).strip(), [*repairs, "fence"]
    if not text:
        raise UnparseableAnswer("empty answer")
    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        raise UnparseableAnswer(f"no JSON object in answer: {raw[:80]!r}")
    if start > 0 or (end >= 0 and end < len(text) - 1):
        repairs.append("preamble")
        text = text[start : end + 1] if end > start else text[start:]
    try:
        try:
            data = json.loads(text)
        except ValueError:
            if len(text) > REPAIR_MAX_CHARS:
                raise UnparseableAnswer(
                    f"broken JSON too large to repair ({len(text)} characters)") from None
            data = json_repair.loads(text)
            repairs.append("json_repair")
    except RecursionError:  # both parsers recurse per nesting level
        raise UnparseableAnswer("answer nested too deeply") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or not data:
        raise UnparseableAnswer(f"no JSON object could be recovered: {raw[:80]!r}")
    return ParsedAnswer(data, repairs)


def _count(dropped: dict[str, int], reason: str, item: Any) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1
    log.info("pruned %s: %s", reason, str(item)[:120])


def _items(data: Mapping[str, Any], key: str, dropped: dict[str, int]) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        _count(dropped, f"invalid_{key}", value)
        return []
    good = []
    for item in value:
        if isinstance(item, dict):
            good.append(item)
        else:
            _count(dropped, f"invalid_{key}", item)
    return good


def _valid(model: type[BaseModel], item: dict[str, Any], key: str, dropped: dict[str, int]) -> Any:
    try:
        obj = model.model_validate(_coerce(item))
    except ValidationError as exc:
        _count(dropped, f"invalid_{key}", f"{item} ({exc.errors()[0]['msg']})")
        return None
    for name_field in ("name", "source", "target", "character", "event", "location"):
        if getattr(obj, name_field, "x") == "":
            _count(dropped, f"invalid_{key}", item)
            return None
    return obj


def _coerce(item: dict[str, Any]) -> dict[str, Any]:
    """Small shape fixes models commonly need: "a、b" strings for lists, scores as text."""
    fixed = dict(item)
    for key in ("traits", "aliases", "participants", "protagonist_reasons", "protagonist_evidence"):
        if isinstance(fixed.get(key), str):
            fixed[key] = [p.strip() for p in re.split(r"[、,，;；]", fixed[key]) if p.strip()]
        elif fixed.get(key) is None and key in fixed:
            fixed[key] = []
    for key in ("protagonist_score", "strength"):
        if isinstance(fixed.get(key), str):
            match = re.search(r"\d+(\.\d+)?", fixed[key])
            fixed[key] = float(match.group()) if match else None
    if isinstance(fixed.get("protagonist_score"), (int, float)):
        fixed["protagonist_score"] = min(100.0, max(0.0, float(fixed["protagonist_score"])))
    if fixed.get("protagonist_score") is None and "protagonist_score" in fixed:
        fixed["protagonist_score"] = 0
    text_fields = ("name", "from", "to", "relation", "character", "event", "location")
    for key in (*text_fields, "type", "description", "title", "role"):
        if key in fixed and not isinstance(fixed[key], str):
            fixed[key] = "" if fixed[key] is None else str(fixed[key])
    return fixed


def validate_extraction(
    data: Mapping[str, Any],
    schema: Schema,
    text: str,
    *,
    roster: Iterable[str] = (),
    name_key: Callable[[str], str] = default_name_key,
) -> ChapterExtraction:
    """Validated items of one chunk's answer; pruned items are counted in ``dropped``.

    Names (or one of their aliases) must occur in ``text`` (compared through ``name_key``),
    which removes hallucinated entities; relations must join entities of this answer or of
    the roster; relation types must map onto the schema's types.
    """
    dropped: dict[str, int] = {}
    haystack = name_key(text)
    found: dict[str, list[Any]] = {}
    for key in set(data) - _KNOWN_KEYS:
        for item in data[key] if isinstance(data[key], list) else []:
            _count(dropped, "category_off_schema", {key: item})
    for key, model in _ITEM_MODELS.items():
        items = [] if key not in schema.categories else _items(data, key, dropped)
        if key not in schema.categories:
            for item in _items(data, key, {}):
                _count(dropped, "category_off_schema", {key: item})
        kept = []
        for item in items:
            obj = _valid(model, item, key, dropped)
            if obj is None:
                continue
            names = [_QUALIFIER.sub("", n) for n in [obj.name, *getattr(obj, "aliases", [])]]
            if key != "events" and not any(name_key(n) in haystack for n in names if n):
                _count(dropped, "entity_not_in_text", obj.name)
                continue
            kept.append(obj)
        merged = _merge_by_key(kept, "name")
        if len(merged) < len(kept):
            dropped["duplicate"] = dropped.get("duplicate", 0) + len(kept) - len(merged)
        found[key] = merged

    def known(items: Sequence[Any]) -> set[str]:
        return {name_key(n) for i in items for n in [i.name, *getattr(i, "aliases", [])] if n}

    people = known(found.get("characters", [])) | {name_key(n) for n in roster if n}
    events, places = known(found.get("events", [])), known(found.get("locations", []))
    char_rels: list[CharacterRelation] = []
    event_rels: list[EventRelation] = []
    place_rels: list[LocationRelation] = []
    if schema.relations:
        for item in _items(data, "character_relationships", dropped):
            rel = _valid(CharacterRelation, item, "character_relationships", dropped)
            if rel is None:
                continue
            kind = normalize_relation(rel.relation)
            if kind is None or kind not in schema.relation_types:
                _count(dropped, "relation_type_off_schema", item)
            elif name_key(rel.source) not in people or name_key(rel.target) not in people:
                _count(dropped, "relation_missing_end", item)
            elif name_key(rel.source) == name_key(rel.target):
                _count(dropped, "relation_self", item)
            else:
                char_rels.append(rel.model_copy(update={"relation": kind}))
        for item in _items(data, "event_relationships", dropped):
            erel = _valid(EventRelation, item, "event_relationships", dropped)
            if erel is not None and (
                name_key(erel.character) not in people or name_key(erel.event) not in events
            ):
                _count(dropped, "relation_missing_end", item)
            elif erel is not None:
                event_rels.append(erel)
        for item in _items(data, "location_relationships", dropped):
            lrel = _valid(LocationRelation, item, "location_relationships", dropped)
            if lrel is not None and (
                name_key(lrel.event) not in events or name_key(lrel.location) not in places
            ):
                _count(dropped, "relation_missing_end", item)
            elif lrel is not None:
                place_rels.append(lrel)
    return ChapterExtraction(
        characters=found.get("characters", []),
        locations=found.get("locations", []),
        organizations=found.get("organizations", []),
        events=found.get("events", []),
        character_relationships=list(
            {(r.source, r.target, r.relation): r for r in char_rels}.values()
        ),
        event_relationships=list({(r.character, r.event): r for r in event_rels}.values()),
        location_relationships=list({(r.event, r.location): r for r in place_rels}.values()),
        dropped=dropped,
    )


def apply_protagonists(extraction: ChapterExtraction, data: Mapping[str, Any]) -> int:
    """Call 2's candidates raise a character's score (never lower it); returns updates made."""
    by_name = {c.name: c for c in extraction.characters}
    for c in extraction.characters:
        for alias in c.aliases:
            by_name.setdefault(alias, c)
    updated = 0
    for item in _items(data, "protagonist_candidates", extraction.dropped):
        character = by_name.get(str(item.get("name", "")).strip())
        fixed = _coerce({"protagonist_score": item.get("score", 0)})
        score = fixed.get("protagonist_score")
        if (
            character is None
            or not isinstance(score, float)
            or score <= character.protagonist_score
        ):
            continue
        character.protagonist_score = score
        character.is_protagonist = score >= 80
        character.protagonist_reasons = [str(r) for r in item.get("reasons") or []]
        character.protagonist_evidence = [str(e) for e in item.get("evidence") or []]
        updated += 1
    return updated
