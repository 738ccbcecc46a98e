"""The ``rules`` extractor: no model, no API key, for ``use_ai = false`` tasks and demos.

One chapter, in order (each step's module says why it works the way it does):

1. text (:mod:`~kgworker.rules.text`): NFKC, jieba's dictionary words without its HMM;
2. people (:mod:`~kgworker.rules.people`): surname and tag candidates kept on evidence, plus
   the config's ``character_patterns`` and the book's known names (``ChapterInput.roster``);
3. forms of address (:mod:`~kgworker.rules.address`): 沈先生, 沈三, 老陈, 阿明… become the
   ``aliases`` of the one person they fit, so entity resolution merges them through the
   novel's alias table as it does for a model's answer; ambiguous ones stay apart;
4. places and organizations (:mod:`~kgworker.rules.places`) by suffix, never over a name;
5. relations (:mod:`~kgworker.rules.relations`): co-occurrence counts, typed by explicit cues.

Events: none. An event needs a name and a scope (who, where, which stretch of text) that
cue words (失火, 谈判, 成亲…) give too unreliably to be written as facts; the rules mode
leaves events to the model. ``filter_words`` are removed from every list. Results are
``extracted_by="rule"`` (confidence 0.7 in the graph). CPU: 40-70 ms per 8,000
characters (``python -m bench rules_speed``), in a worker thread; what depends only on the
book (its roster, read into lookup tables) is kept per novel, for the last 64 novels.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    Character,
    ExtractionOptions,
    Place,
)
from kgworker.domain.names import display_name, is_generic, split_qualified
from kgworker.rules.address import Index, Person, Someone, attribute, cast, read_forms
from kgworker.rules.lexicon import HONORIFICS, RANKS, ROLES
from kgworker.rules.people import (
    Candidate,
    Evidence,
    discover,
    is_person,
    occurrence_evidence,
    split_surname,
)
from kgworker.rules.places import find_places
from kgworker.rules.relations import relations
from kgworker.rules.text import (
    Tokens,
    ensure_jieba,
    find_all,
    normalise,
    tokenize,
    units,
)

__all__ = ["RulesExtractor", "ensure_jieba"]

_LIST_KEYS = {
    "人物": "characters",
    "character": "characters",
    "characters": "characters",
    "person": "characters",
    "地点": "locations",
    "location": "locations",
    "locations": "locations",
    "place": "locations",
    "组织": "organizations",
    "organization": "organizations",
    "organizations": "organizations",
}
_PLACE_ENDS = ("渡", "镇", "村", "寺", "庙", "洲", "岛", "楼", "府", "庄", "帮", "派", "宗",
               "客栈", "商行", "镖局")


@lru_cache(maxsize=256)
def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns if p.strip())


def _patterns(cfg: Mapping[str, Any], key: str) -> tuple[re.Pattern[str], ...]:
    return _compile(tuple(str(p) for p in cfg.get(key) or []))


def _roster_person(canonical: str) -> Person:
    base, qualifier = split_qualified(canonical)
    surname, given = split_surname(base)
    if not surname or given in HONORIFICS or given in ROLES or given[:1] in RANKS:
        surname, given = "", ""  # 三爷, 王掌柜: matched as written, never taken apart
    return Person(base, surname, given, in_chapter=False, role=qualifier)


class _Book:
    """What the extractor keeps of one novel: its roster, read into people and names."""

    def __init__(self) -> None:
        self.people: dict[str, Person] = {}
        self.places: set[str] = set()
        self._seen: set[str] = set()
        self._bases: set[str] = set()

    def update(self, roster: Mapping[str, Sequence[str]]) -> None:
        """Read the names not seen before (the roster only grows)."""
        for name in roster.get("characters", ()):
            if name in self._seen:
                continue
            self._seen.add(name)
            person = _roster_person(name)
            if person.name not in self._bases:  # 陈默（巡警） beside 陈默: one base name
                self._bases.add(person.name)
                self.people[name] = person
        for key in ("locations", "organizations"):
            for name in roster.get(key, ()):
                if name not in self._seen:
                    self._seen.add(name)
                    self.places.add(display_name(name))


class RulesExtractor:
    """:class:`~kgworker.domain.extraction.Extractor` using jieba and lexicons; see module doc."""

    def __init__(
        self, *, min_mentions: int = 2, min_pair_count: int = 3, books: int = 64
    ) -> None:
        self.min_mentions = min_mentions
        self.min_pair_count = min_pair_count
        self._books: OrderedDict[int, _Book] = OrderedDict()
        self._max_books = books
        self._lock = threading.Lock()

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions) -> ChapterExtraction:
        await ensure_jieba()
        return await asyncio.to_thread(self.extract_chapter, chapter, options)

    def extract_chapter(
        self, chapter: ChapterInput, options: ExtractionOptions
    ) -> ChapterExtraction:
        """The synchronous core (CPU-bound: call it off the event loop)."""
        with self._lock:
            book = self._books.pop(chapter.novel_id, None) or _Book()
            book.update(chapter.roster)
            self._books[chapter.novel_id] = book
            while len(self._books) > self._max_books:
                self._books.popitem(last=False)
            people = list(book.people.values())
            places = set(book.places)
        return self._extract(chapter.content, options, people, places)

    def extract_text(
        self,
        text: str,
        options: ExtractionOptions,
        roster: Mapping[str, Sequence[str]] | None = None,
    ) -> ChapterExtraction:
        """One text with an optional roster, without the per-novel cache."""
        book = _Book()
        book.update(roster or {})
        return self._extract(text, options, list(book.people.values()), book.places)

    def _extract(
        self, raw: str, options: ExtractionOptions, roster: list[Person], known: set[str]
    ) -> ChapterExtraction:
        result = ChapterExtraction(extracted_by="rule")
        if not options.enable_entity_extraction:
            return result
        text = normalise(raw)
        cfg = options.rule_config or {}
        filters = {display_name(str(w)) for w in cfg.get("filter_words") or []}
        wanted = {_LIST_KEYS.get(str(t).strip().lower()) for t in options.entity_types}
        wanted = {w for w in wanted if w} or {"characters", "locations", "organizations"}
        tokens = tokenize(text)
        people = self._people(text, tokens, cfg, roster, filters)
        blocked = [span for p in people for span in p.spans]
        locations, organizations, _ = find_places(
            text,
            tokens,
            blocked=blocked,
            known=known,
            filters=filters | {p.name for p in people},
            location_patterns=_patterns(cfg, "location_patterns"),
            min_mentions=self.min_mentions,
        )
        if "characters" in wanted:
            result.characters = _characters(people)
        if "locations" in wanted:
            result.locations = [Place(name=n, type="地点") for n, _ in locations.most_common()]
        if "organizations" in wanted:
            result.organizations = [
                Place(name=n, type="组织") for n, _ in organizations.most_common()
            ]
        if options.enable_relation_extraction and "characters" in wanted:
            result.character_relationships = relations(
                text, people, units(text), min_count=self.min_pair_count
            )
        return result

    def _people(
        self,
        text: str,
        tokens: Tokens,
        cfg: Mapping[str, Any],
        roster: list[Person],
        filters: set[str],
    ) -> list[Someone]:
        configured: set[str] = set()
        for pattern in _patterns(cfg, "character_patterns"):
            for hit in pattern.finditer(text):
                configured.add(hit.group(1) if pattern.groups else hit.group(0))
        configured = {display_name(n) for n in configured if n}
        candidates = discover(tokens)
        for name in configured:
            candidates.setdefault(name, Candidate(name, *split_surname(name)))
        for c in candidates.values():
            if c.name.endswith(_PLACE_ENDS):
                c.common = True  # 白鹭洲/nr, 望江楼/nr: jieba's names that are places
        evidence: dict[str, Evidence] = {name: Evidence() for name in candidates}
        for start, end, name in find_all(text, {n: n for n in candidates}):
            evidence[name].add(occurrence_evidence(text, tokens, start, end), start)
        present = {p.name for p in roster if p.name in text}
        accepted = {
            name
            for name, c in candidates.items()
            if name in configured or name in present or is_person(c, evidence[name])
        }
        accepted = {n for n in accepted if n not in filters and not is_generic(n) and len(n) >= 2}
        accepted |= {n for n in present if n not in filters}
        # 黛玉 beside 林黛玉: the given name is a form of the full name, not a second person.
        givens = {p.given for p in roster if p.surname and len(p.given) >= 2}
        givens |= {c.given for n, c in candidates.items() if n in accepted and c.surname}
        accepted -= {n for n in givens if n in candidates and not candidates[n].surname}

        def build(names: Iterable[str]) -> Index:
            local: list[Person] = []
            for name in sorted(names):
                surname, given = split_surname(name)
                if name in candidates:
                    surname, given = candidates[name].surname, candidates[name].given
                local.append(Person(name, surname, given, in_chapter=True))
            return Index(local + [p for p in roster if p.name not in names])

        index = build(accepted)
        reading = attribute(read_forms(text, tokens, index), index)
        # A surname addressed (孙掌柜) with no full name for it: the one candidate with that
        # surname is the person addressed (永昌商行的孙有福, mentioned once).
        addressed = {f.key for f in reading.unowned if f.kind in ("surname", "rank")}
        extra: set[str] = set()
        for surname in addressed:
            fitting = [
                n
                for n, c in candidates.items()
                if c.surname == surname and not c.common and evidence[n].mentions
            ]
            if len(fitting) == 1 and fitting[0] not in filters:
                extra.add(fitting[0])
        if extra - accepted:
            index = build(accepted | extra)
            reading = attribute(read_forms(text, tokens, index), index)
        found = cast(text, reading)
        return found + self._standalone(text, tokens, reading.unowned, filters)

    @staticmethod
    def _standalone(
        text: str, tokens: Tokens, unowned: Sequence[Any], filters: set[str]
    ) -> list[Someone]:
        """Forms of address nobody in the book fits (王夫人, 孙掌柜 before his name is
        known): people of their own when the evidence says so."""
        seen: dict[str, tuple[Evidence, list[tuple[int, int]]]] = {}
        for form in unowned:
            if form.kind not in ("surname", "rank", "given_char"):
                continue
            surface = text[form.start : form.end]
            ev, spans = seen.setdefault(surface, (Evidence(), []))
            ev.add(occurrence_evidence(text, tokens, form.start, form.end), form.start)
            spans.append((form.start, form.end))
        out = []
        for surface, (ev, spans) in seen.items():
            candidate = Candidate(surface, surface[:1], "")
            if surface not in filters and ev.mentions >= 2 and is_person(candidate, ev):
                out.append(Someone(surface, spans=spans, ref=surface))
        return out


def _characters(people: Sequence[Someone]) -> list[Character]:
    ranked = sorted(people, key=lambda p: -len(p.spans))
    top = len(ranked[0].spans) if ranked else 0
    out = []
    for i, p in enumerate(ranked):
        mentions = len(p.spans)
        main = i == 0 and mentions >= 3
        out.append(
            Character(
                name=p.name,
                title=p.title,
                aliases=[a for a in p.aliases if a != p.name],
                is_protagonist=main,
                protagonist_score=min(100.0, 80.0 * mentions / top) if top else 0.0,
                protagonist_reasons=["出场次数最多"] if i == 0 else [],
            )
        )
    return out
