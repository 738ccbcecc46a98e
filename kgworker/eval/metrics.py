"""Score a run over the gold novel: precision/recall/F1, duplicates, over-merges, dangling.

Definitions (per chapter, micro-averaged over the book):

* entity: (type, canonical name) for characters, locations, organizations and events;
* relation: (TYPE, from, to) for character relations (FRIEND, ENEMY and KNOWS unordered),
  (PARTICIPATES_IN, character, event) and (OCCURS_IN, event, location);
* duplicate rate: for each gold entity, the distinct entities of the book standing for it
  (its canonical name, or an alias, variant, given name or honorific form of it) beyond the
  first, summed, over all distinct entities of the book; spurious = names standing for
  nothing in the gold (a mis-named but single entity lowers F1, not the duplicate rate);
* over-merge: a spelling that belongs to exactly one gold entity A mapped (by the alias table
  or in a chapter's resolution) onto a canonical that denotes another gold entity B;
* dangling written: a relation in a resolved chapter whose end is neither an entity of that
  chapter nor one known before it — must be 0; dangling dropped: what parsing and resolution
  removed for that reason (``relation_missing_end``);
* per entity type: the entity scores of characters, locations, organizations and events;
* character relations: the character-to-character part of the relations (typed); pairs:
  the same without the type (did the run see that these two are related at all);
* aliases: every spelling the gold annotations give an entity and the book writes for it,
  other than its canonical name, a spelling variant of it (趙鐵生, ３号货仓: normalised,
  not merged) and a spelling shared by two entities (陈默): merged when the alias table or a
  chapter's resolution maps it onto that entity; wrong merges are the over-merges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kgworker.domain.extraction import ChapterExtraction
from kgworker.domain.names import name_key, strip_honorifics
from kgworker.domain.resolution import KINDS, SYMMETRIC_RELATIONS
from kgworker.eval.gold import GoldNovel, expected
from kgworker.eval.runner import ChapterRun, NovelRun


@dataclass
class PRF:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, got: set[tuple[str, ...]], want: set[tuple[str, ...]]) -> None:
        self.tp += len(got & want)
        self.fp += len(got - want)
        self.fn += len(want - got)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


@dataclass
class AliasScore:
    """Gold aliases merged onto their entity (see module doc)."""

    gold: int = 0
    merged: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return len(self.merged) / self.gold if self.gold else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "gold": self.gold,
            "merged": len(self.merged),
            "recall": round(self.recall, 4),
            "missed": self.missed,
        }


ENTITY_TYPES = ("character", "location", "organization", "event")


@dataclass
class Report:
    entities: PRF = field(default_factory=PRF)
    relations: PRF = field(default_factory=PRF)
    by_type: dict[str, PRF] = field(default_factory=lambda: {t: PRF() for t in ENTITY_TYPES})
    character_relations: PRF = field(default_factory=PRF)
    character_pairs: PRF = field(default_factory=PRF)
    aliases: AliasScore = field(default_factory=AliasScore)
    distinct_entities: int = 0
    duplicates: list[str] = field(default_factory=list)
    spurious: list[str] = field(default_factory=list)
    over_merges: list[str] = field(default_factory=list)
    dangling_dropped: int = 0
    dangling_written: int = 0
    failed_chapters: list[int] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    main_characters_missed: list[str] = field(default_factory=list)

    @property
    def duplicate_rate(self) -> float:
        return len(self.duplicates) / self.distinct_entities if self.distinct_entities else 0.0

    @property
    def wrong_merges(self) -> int:
        return len(self.over_merges)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["entities"] = self.entities.summary()
        out["relations"] = self.relations.summary()
        out["by_type"] = {t: prf.summary() for t, prf in self.by_type.items()}
        out["character_relations"] = self.character_relations.summary()
        out["character_pairs"] = self.character_pairs.summary()
        out["aliases"] = {**self.aliases.summary(), "wrong": self.wrong_merges}
        out["duplicate_rate"] = round(self.duplicate_rate, 4)
        return out


def predicted(extraction: ChapterExtraction) -> dict[str, set[tuple[str, ...]]]:
    entities: set[tuple[str, ...]] = set()
    for key, etype in KINDS:
        entities |= {(etype, item.name) for item in getattr(extraction, key)}
    entities |= {("event", e.name) for e in extraction.events}
    relations: set[tuple[str, ...]] = set()
    for r in extraction.character_relationships:
        relations.add((r.relation, r.source, r.target))
    relations |= {("PARTICIPATES_IN", r.character, r.event) for r in extraction.event_relationships}
    relations |= {("OCCURS_IN", r.event, r.location) for r in extraction.location_relationships}
    return {"entities": entities, "relations": relations}


def _undirected(relations: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    return {
        (k, *sorted((a, b))) if k in SYMMETRIC_RELATIONS else (k, a, b) for k, a, b in relations
    }


def _between_characters(relations: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    return {r for r in relations if r[0] not in ("PARTICIPATES_IN", "OCCURS_IN")}


def _pairs(relations: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    return {tuple(sorted(r[1:])) for r in _between_characters(relations)}


class _Denoter:
    """Which gold entities a spelling may stand for."""

    def __init__(self, novel: GoldNovel) -> None:
        self.canonical = {
            (etype, name) for etype, entries in novel.registry.items() for name in entries
        }
        self.exact: dict[tuple[str, str], set[str]] = {}
        for (etype, spelling), names in novel.lexicon().items():
            self.exact.setdefault((etype, name_key(spelling)), set()).update(names)
        self.registry = novel.registry

    def denotes(self, etype: str, name: str) -> set[str]:
        found = set(self.exact.get((etype, name_key(name)), set()))
        stripped = strip_honorifics(name)
        for gold in self.registry.get(etype, {}):
            if stripped == gold or (len(name) >= 2 and gold.endswith(name) and gold != name):
                found.add(gold)
        return found

    def unambiguous(self, etype: str, spelling: str) -> str | None:
        found = self.exact.get((etype, name_key(spelling)), set())
        return next(iter(found)) if len(found) == 1 else None


def _dangling(run: ChapterRun) -> int:
    r = run.resolved
    names = {etype: {name_key(i.name) for i in getattr(r, key)} for key, etype in KINDS}

    def ok(etype: str, name: str) -> bool:
        key = name_key(name)
        return key in names[etype] or (etype, key) in run.known_before

    events = {e.name for e in r.events}
    bad = sum(
        not (ok("character", x.source) and ok("character", x.target))
        for x in r.character_relationships
    )
    bad += sum(
        not (ok("character", x.character) and x.event in events) for x in r.event_relationships
    )
    bad += sum(
        not (ok("location", x.location) and x.event in events) for x in r.location_relationships
    )
    return bad


def score(novel: GoldNovel, run: NovelRun) -> Report:
    report = Report()
    denoter = _Denoter(novel)
    book: set[tuple[str, str]] = set()
    for chapter, result in zip(novel.chapters, run.chapters, strict=True):
        want = expected(chapter)
        got = predicted(result.resolved)
        report.entities.add(got["entities"], want["entities"])
        report.relations.add(_undirected(got["relations"]), _undirected(want["relations"]))
        for etype, prf in report.by_type.items():
            prf.add(
                {e for e in got["entities"] if e[0] == etype},
                {e for e in want["entities"] if e[0] == etype},
            )
        report.character_relations.add(
            _between_characters(_undirected(got["relations"])),
            _between_characters(_undirected(want["relations"])),
        )
        report.character_pairs.add(_pairs(got["relations"]), _pairs(want["relations"]))
        report.missed += [
            f"{chapter.number}:{'/'.join(x)}" for x in want["entities"] - got["entities"]
        ]
        report.missed += [
            f"{chapter.number}:{'/'.join(x)}"
            for x in _undirected(want["relations"]) - _undirected(got["relations"])
        ]
        report.extra += [
            f"{chapter.number}:{'/'.join(x)}" for x in got["entities"] - want["entities"]
        ]
        report.extra += [
            f"{chapter.number}:{'/'.join(x)}"
            for x in _undirected(got["relations"]) - _undirected(want["relations"])
        ]
        book |= {(e[0], e[1]) for e in got["entities"] if e[0] != "event"}
        # resolved.dropped already includes what the parser dropped (raw.dropped).
        report.dangling_dropped += result.resolved.dropped.get("relation_missing_end", 0)
        report.dangling_written += _dangling(result)
        if result.error:
            report.failed_chapters.append(chapter.number)
    report.distinct_entities = len(book)
    shown_as: dict[tuple[str, str], list[str]] = {}
    for etype, name in sorted(book):
        owners = {name} if (etype, name) in denoter.canonical else denoter.denotes(etype, name)
        if not owners:
            report.spurious.append(f"{etype}:{name}")
        for gold in owners:
            shown_as.setdefault((etype, gold), []).append(name)
    for (etype, gold), names in sorted(shown_as.items()):
        # Every entity beyond the first standing for one gold entity is a duplicate.
        report.duplicates += [f"{etype}:{n}(={gold})" for n in names[1:]]
    pairs: set[str] = set()
    facts = [(r["entity_type"], r["alias"], r["canonical"]) for r in run.table.to_rows()]
    facts += [(t, s, c) for ch in run.chapters for (t, s), c in ch.mapping.items()]
    for etype, spelling, canonical in facts:
        owner: str | None = denoter.unambiguous(etype, spelling)
        targets = (
            {canonical}
            if (etype, canonical) in denoter.canonical
            else denoter.denotes(etype, canonical)
        )
        if owner and targets and owner not in targets:
            pairs.add(f"{etype}:{spelling}({owner})→{canonical}")
    report.over_merges = sorted(pairs)
    report.aliases = _alias_score(novel, denoter, facts)
    found = {c.name for ch in run.chapters for c in ch.resolved.characters}
    report.main_characters_missed = [m for m in novel.main_characters if m not in found]
    return report


def _alias_score(
    novel: GoldNovel, denoter: _Denoter, facts: list[tuple[str, str, str]]
) -> AliasScore:
    written: set[tuple[str, str, str]] = set()
    for chapter in novel.chapters:
        for (etype, canonical), surfaces in chapter.entities.items():
            for surface in surfaces:
                if name_key(surface) != name_key(canonical):
                    written.add((etype, surface, canonical))
    gold = sorted(
        (etype, surface, canonical)
        for etype, surface, canonical in written
        if denoter.unambiguous(etype, surface) == canonical
    )
    mapped = {(etype, name_key(s), c) for etype, s, c in facts}
    score = AliasScore(gold=len(gold))
    for etype, surface, canonical in gold:
        label = f"{etype}:{surface}→{canonical}"
        if (etype, name_key(surface), canonical) in mapped:
            score.merged.append(label)
        else:
            score.missed.append(label)
    return score
