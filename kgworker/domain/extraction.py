"""Typed extraction results in the chaishu shapes (docs/chaishu-compat.md §4); the extractor
seam.

An extractor turns one chapter into one :class:`ChapterExtraction`. Chunked chapters are
extracted piecewise and combined with :func:`merge_extractions`, so the pipeline never sees
chunks. Validation is tolerant on input (missing fields get defaults, blank names are pruned
by the parsers) and strict on output (the graph writer relies on these types).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

ExtractedBy = Literal["ai", "rule"]

#: Character-to-character relation types the chaishu app understands (docs/chaishu-compat.md §3).
CHARACTER_RELATION_TYPES = ("FRIEND", "ENEMY", "LOVES", "HATES", "KNOWS", "LEADS", "FOLLOWS")


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=True)


class Character(_Item):
    name: str
    description: str = ""
    traits: list[str] = Field(default_factory=list)
    title: str = ""
    is_protagonist: bool = False
    protagonist_score: float = Field(0, ge=0, le=100)
    protagonist_reasons: list[str] = Field(default_factory=list)
    protagonist_evidence: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)


class Place(_Item):
    """A location or an organization: both carry a name, a description and a type."""

    name: str
    description: str = ""
    type: str = ""
    aliases: list[str] = Field(default_factory=list)


class Event(_Item):
    name: str
    description: str = ""
    importance: str | float | None = None
    participants: list[str] = Field(default_factory=list)


class CharacterRelation(_Item):
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    relation: str
    description: str = ""
    strength: float | None = None


class EventRelation(_Item):
    character: str
    event: str
    role: str = ""
    description: str = ""


class LocationRelation(_Item):
    event: str
    location: str
    description: str = ""


class ChapterExtraction(_Item):
    """Everything found in one chapter, ready for the graph writer."""

    characters: list[Character] = Field(default_factory=list)
    locations: list[Place] = Field(default_factory=list)
    organizations: list[Place] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    character_relationships: list[CharacterRelation] = Field(default_factory=list)
    event_relationships: list[EventRelation] = Field(default_factory=list)
    location_relationships: list[LocationRelation] = Field(default_factory=list)
    extracted_by: ExtractedBy = "ai"
    #: Items dropped on the way (reason -> count), e.g. {"relation_missing_end": 2}.
    dropped: dict[str, int] = Field(default_factory=dict)
    #: LLM usage paid for this result (cache hits cost nothing); summed by merge_extractions.
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    #: Which provider and model produced it (None: no model involved, e.g. rules).
    provider: str | None = None
    model: str | None = None

    @property
    def entity_count(self) -> int:
        return (
            len(self.characters) + len(self.locations) + len(self.organizations) + len(self.events)
        )

    @property
    def relation_count(self) -> int:
        return (
            len(self.character_relationships)
            + len(self.event_relationships)
            + len(self.location_relationships)
        )


def _merge_by_key(items: Iterable[Any], key: str) -> list[Any]:
    """First occurrence wins; later ones fill empty fields and extend lists."""
    merged: dict[Any, Any] = {}
    for item in items:
        k = getattr(item, key)
        if k not in merged:
            merged[k] = item.model_copy(deep=True)
            continue
        kept = merged[k]
        for name in type(item).model_fields:
            old, new = getattr(kept, name), getattr(item, name)
            if isinstance(old, list):
                setattr(kept, name, list(dict.fromkeys([*old, *new])))
            elif name == "protagonist_score":
                setattr(kept, name, max(old, new))
            elif name == "is_protagonist":
                setattr(kept, name, old or new)
            elif old in ("", None) and new not in ("", None):
                setattr(kept, name, new)
    return list(merged.values())


def merge_extractions(parts: Sequence[ChapterExtraction]) -> ChapterExtraction:
    """Combine the results of a chapter's chunks into one chapter result."""
    if len(parts) == 1:
        return parts[0]
    dropped: dict[str, int] = {}
    for part in parts:
        for reason, count in part.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count

    def rel_key(r: CharacterRelation) -> tuple[str, str, str]:
        return (r.source, r.target, r.relation)

    char_rels: dict[tuple[str, str, str], CharacterRelation] = {}
    for part in parts:
        for rel in part.character_relationships:
            char_rels.setdefault(rel_key(rel), rel)
    return ChapterExtraction(
        characters=_merge_by_key((c for p in parts for c in p.characters), "name"),
        locations=_merge_by_key((c for p in parts for c in p.locations), "name"),
        organizations=_merge_by_key((c for p in parts for c in p.organizations), "name"),
        events=_merge_by_key((c for p in parts for c in p.events), "name"),
        character_relationships=list(char_rels.values()),
        event_relationships=list(
            {(r.character, r.event): r for p in parts for r in p.event_relationships}.values()
        ),
        location_relationships=list(
            {(r.event, r.location): r for p in parts for r in p.location_relationships}.values()
        ),
        extracted_by=parts[0].extracted_by if parts else "ai",
        dropped=dropped,
        llm_calls=sum(p.llm_calls for p in parts),
        prompt_tokens=sum(p.prompt_tokens for p in parts),
        completion_tokens=sum(p.completion_tokens for p in parts),
        cost=sum(p.cost for p in parts),
        provider=next((p.provider for p in parts if p.provider), None),
        model=next((p.model for p in parts if p.model), None),
    )


@dataclass(frozen=True)
class ChapterInput:
    """One chapter as read from MySQL, with what the extractor needs to know about it."""

    novel_id: int
    chapter_id: int
    chapter_number: int
    title: str
    content: str
    task_id: int
    #: Canonical names already known for this novel (roster injection), by entity type.
    roster: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractionOptions:
    """The applicable ``knowledge_graph_configs`` row, reduced to what extraction uses."""

    provider: str = "rules"
    model: str | None = None
    enable_entity_extraction: bool = True
    enable_relation_extraction: bool = True
    entity_types: tuple[str, ...] = ()
    relation_types: tuple[str, ...] = ()
    rule_config: dict[str, Any] = field(default_factory=dict)
    max_content_length: int = 4000
    use_cache: bool = True


class Extractor(Protocol):
    """Turns a chapter into a result. Raises :class:`ExtractionError` to fail the chapter."""

    async def extract(
        self, chapter: ChapterInput, options: ExtractionOptions
    ) -> ChapterExtraction: ...


class ExtractionError(Exception):
    """The chapter cannot be extracted; ``reason`` is shown to operators as is."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class StoreUnavailable(Exception):
    """A store the chapter needs (MySQL, Neo4j, Redis) cannot be reached right now.

    Not the chapter's fault: the handler waits (backing off, claims held back) and tries the
    same step again, and no attempt of the chapter is spent on it.
    """

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store} unavailable: {reason}")
        self.store = store
        self.reason = reason
