"""The gold mini-novel (``examples/novel``) and a model that answers from its annotations.

Why: nobody publishes extraction precision/recall; a small original novel annotated by hand,
answered by a fake model that knows the truth, lets us measure what chunking, parsing and
resolution do to a perfect answer — and to a faulty one (faults are injected elsewhere).

:func:`gold_answer` is a pure function of a piece of chapter text: it finds the chapter the
text comes from, the gold entities *mentioned in that piece* (longest surface first, so
李明月 is not also a mention of 李明), the relations and events whose cue phrase lies in it,
and returns the docs/chaishu-compat.md §4 JSON a perfect model would give for that piece: canonical
names, the aliases written in the piece, titles and descriptions from the registry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

#: The gold novel inside an installed wheel (pyproject force-includes ``examples/novel``
#: there), then in a source checkout.
PACKAGED_NOVEL_DIR = Path(__file__).resolve().parents[1] / "demo" / "novel"
CHECKOUT_NOVEL_DIR = Path(__file__).resolve().parents[2] / "examples" / "novel"
_LISTS = {"character": "characters", "location": "locations", "organization": "organizations"}


@dataclass(frozen=True)
class GoldChapter:
    number: int
    title: str
    text: str
    #: (type, canonical) → surfaces as written in this chapter.
    entities: dict[tuple[str, str], list[str]]
    relations: list[dict[str, str]]
    events: list[dict[str, Any]]


@dataclass(frozen=True)
class GoldNovel:
    title: str
    author: str
    chapters: list[GoldChapter]
    #: type → canonical → registry entry (title, description, type, aliases).
    registry: dict[str, dict[str, dict[str, Any]]]
    protagonist: str
    main_characters: list[str]
    traps: list[dict[str, str]] = field(default_factory=list)

    def lexicon(self) -> dict[tuple[str, str], set[str]]:
        """(type, any known spelling) → canonical names it may denote (2+ = ambiguous)."""
        out: dict[tuple[str, str], set[str]] = {}
        for etype, entries in self.registry.items():
            for name, entry in entries.items():
                for spelling in (name, *entry.get("aliases", [])):
                    out.setdefault((etype, spelling), set()).add(name)
        return out


def default_novel_dir() -> Path:
    """The packaged copy when there is one (``pip install``), else the checkout's."""
    if (PACKAGED_NOVEL_DIR / "gold.json").is_file():
        return PACKAGED_NOVEL_DIR
    return CHECKOUT_NOVEL_DIR


def load_novel(directory: Path | str | None = None) -> GoldNovel:
    """Read ``book.json``, the chapter files and ``gold.json`` from ``directory`` (default:
    :func:`default_novel_dir`)."""
    if directory is None:
        directory = default_novel_dir()
    root = Path(directory)
    book = json.loads((root / "book.json").read_text(encoding="utf-8"))
    gold = json.loads((root / "gold.json").read_text(encoding="utf-8"))
    titles = {c["number"]: c["title"] for c in book["chapters"]}
    chapters = [
        GoldChapter(
            number=c["number"],
            title=titles.get(c["number"], ""),
            text=(root / c["file"]).read_text(encoding="utf-8"),
            entities={(e["type"], e["name"]): list(e["surfaces"]) for e in c["entities"]},
            relations=list(c["relations"]),
            events=list(c["events"]),
        )
        for c in gold["chapters"]
    ]
    return GoldNovel(
        title=book["title"],
        author=book["author"],
        chapters=chapters,
        registry=gold["entities"],
        protagonist=gold["protagonist"],
        main_characters=list(gold["main_characters"]),
        traps=list(gold.get("traps", [])),
    )


@cache
def default_novel() -> GoldNovel:
    return load_novel()


def find_chapter(text: str, novel: GoldNovel) -> GoldChapter | None:
    """The chapter ``text`` was cut from (whole, or by its longest line)."""
    piece = text.strip()
    if not piece:
        return None
    for chapter in novel.chapters:
        if piece in chapter.text:
            return chapter
    longest = max(piece.splitlines(), key=len).strip()
    for chapter in novel.chapters:
        if longest and longest in chapter.text:
            return chapter
    return None


def mentions(text: str, chapter: GoldChapter) -> dict[tuple[str, str], list[str]]:
    """Gold entities mentioned in ``text`` → the surfaces used, longest match first."""
    owners: dict[str, list[tuple[str, str]]] = {}
    for ident, surfaces in chapter.entities.items():
        for surface in surfaces:
            owners.setdefault(surface, []).append(ident)
    taken = [False] * len(text)
    found: dict[tuple[str, str], list[str]] = {}
    for surface in sorted(owners, key=len, reverse=True):
        start = text.find(surface)
        while start >= 0:
            end = start + len(surface)
            if not any(taken[start:end]):
                taken[start:end] = [True] * len(surface)
                for ident in owners[surface]:
                    found.setdefault(ident, [])
                    if surface not in found[ident]:
                        found[ident].append(surface)
            start = text.find(surface, start + 1)
    return found


def _aliases(canonical: str, surfaces: list[str], shared: set[str]) -> list[str]:
    """Surfaces other than the canonical, unambiguous ones first (a model's best guess)."""
    rest = [s for s in surfaces if s != canonical]
    return sorted(rest, key=lambda s: (s in shared, -len(s)))


def gold_answer(text: str, novel: GoldNovel | None = None) -> dict[str, Any]:
    """The perfect single-call answer (docs/chaishu-compat.md §4) for a piece of chapter text.

    Unknown text gives an empty answer. Faults are applied by the caller (the fake server's
    injector), so this function stays a pure description of the truth.
    """
    novel = novel or default_novel()
    answer: dict[str, Any] = {
        "characters": [],
        "locations": [],
        "organizations": [],
        "events": [],
        "character_relationships": [],
        "event_relationships": [],
        "location_relationships": [],
    }
    chapter = find_chapter(text, novel)
    if chapter is None:
        return answer
    found = mentions(text, chapter)
    spelled: dict[str, int] = {}
    for surfaces in found.values():
        for s in surfaces:
            spelled[s] = spelled.get(s, 0) + 1
    shared = {s for s, n in spelled.items() if n > 1}
    for (etype, name), surfaces in found.items():
        entry = novel.registry[etype][name]
        item: dict[str, Any] = {
            "name": name,
            "aliases": _aliases(name, surfaces, shared),
            "description": entry.get("description", ""),
        }
        if etype == "character":
            main = name == novel.protagonist
            item.update(
                title=entry.get("title", ""),
                traits=[],
                is_protagonist=main,
                protagonist_score=90 if main else 30,
            )
        else:
            item["type"] = entry.get("type", "")
        answer[_LISTS[etype]].append(item)
    for rel in chapter.relations:
        if rel["cue"] in text:
            answer["character_relationships"].append(
                {
                    "from": rel["from"],
                    "to": rel["to"],
                    "relation": rel["type"],
                    "description": rel["cue"],
                    "strength": 0.8,
                }
            )
    for event in chapter.events:
        if event["cue"] not in text:
            continue
        answer["events"].append(
            {
                "name": event["name"],
                "description": event["description"],
                "importance": "高",
                "participants": list(event["participants"]),
            }
        )
        for who, role in event["participants"].items():
            answer["event_relationships"].append(
                {"character": who, "event": event["name"], "role": role, "description": ""}
            )
        if event.get("location"):
            answer["location_relationships"].append(
                {"event": event["name"], "location": event["location"], "description": ""}
            )
    return answer


def gold_answerer(request: Any) -> dict[str, Any]:
    """Adapter for the fake LLM server: anything with a ``text`` attribute, or a string."""
    text = request if isinstance(request, str) else str(getattr(request, "text", ""))
    return gold_answer(text)


def expected(chapter: GoldChapter) -> dict[str, set[tuple[str, ...]]]:
    """What a perfect run must produce for a chapter, as comparable tuples."""
    entities: set[tuple[str, ...]] = {(etype, name) for etype, name in chapter.entities}
    entities |= {("event", e["name"]) for e in chapter.events}
    relations: set[tuple[str, ...]] = {(r["type"], r["from"], r["to"]) for r in chapter.relations}
    for e in chapter.events:
        relations |= {("PARTICIPATES_IN", who, e["name"]) for who in e["participants"]}
        if e.get("location"):
            relations.add(("OCCURS_IN", e["name"], e["location"]))
    return {"entities": entities, "relations": relations}
