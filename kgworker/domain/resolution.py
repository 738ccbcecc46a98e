"""Entity resolution per novel: one canonical node per character, place and organization.

Duplicates are the top complaint about LLM knowledge graphs (aliases, honorifics,
traditional vs simplified spellings). Every name is normalised (:mod:`names`) and looked up
in the novel's :class:`AliasTable`, which grows chapter by chapter and is persisted by the
pipeline, so 三爷 in chapter 5 lands on 沈青山 because chapter 1 said 沈三 and chapter 5
said 沈三 is 三爷 (alias chains). Rules, in the order they are applied:

* Types never mix: the table is keyed by entity type.
* The item's own name (exact, then without honorifics) wins over its aliases; an alias
  links a new name to a known entity only when the two are not nested names (李明 / 李明月).
* Homonyms: a name written ``X（role）`` is its own entity whose base name X is shared.
  A bare X then goes to the member whose recorded role (``title``) appears in the item's
  title or description, else to the first-registered one. Two items named X with different
  titles in one answer (one scene) are different people: the second becomes ``X（title）``.
  So does an item that reaches a known X only through a stripped honorific while carrying a
  title that contradicts X's roles (小陈默 the 巡警 is not 陈默 the 掌柜). Across chapters
  a bare name with a contradicting title still goes to the known entity (titles are noisy);
  such uncertain matches do not teach the table new aliases.
* An unknown character name is finally tried against the cast: a bare given name, a form
  of address (老陈, 陆先生) or a full name meeting a known form of address (:func:`_cast_match`).
* Relations are rewritten to canonical names. A relation whose end is neither an entity of
  this chapter nor an entity known before it is dropped and counted (``relation_missing_end``),
  as are self-relations after merging and types outside the seven the app understands.

Known limit: the first spelling under which a new entity is seen becomes its canonical name
(renaming later would mean rewriting graph nodes already written), so a book that says 明月
long before 李明月 keeps 明月 as the node name, with 李明月 as an alias: one node, not two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kgworker.domain.aliases import KINDS, AliasRow, AliasTable
from kgworker.domain.extraction import (
    CHARACTER_RELATION_TYPES,
    ChapterExtraction,
    Character,
    CharacterRelation,
    Event,
    EventRelation,
    LocationRelation,
    Place,
    _merge_by_key,
)
from kgworker.domain.names import (
    address_surname,
    display_name,
    is_generic,
    name_key,
    nested_conflict,
    split_qualified,
    strip_honorifics,
)

EntityType = Literal["character", "location", "organization"]
SYMMETRIC_RELATIONS = frozenset({"FRIEND", "ENEMY", "KNOWS"})
__all__ = [
    "KINDS",
    "SYMMETRIC_RELATIONS",
    "AliasRow",
    "AliasTable",
    "Resolution",
    "resolve",
    "resolve_with_map",
]


@dataclass
class Resolution:
    """A resolved chapter, plus how each surface name was mapped (for evaluation)."""

    extraction: ChapterExtraction
    #: (entity type, name as given) → canonical name.
    mapping: dict[tuple[str, str], str]


def _role_matches(roles: Iterable[str], context: str) -> bool:
    return any(role and role in context for role in roles)


def _role_conflict(table: AliasTable, etype: str, canonical: str, title: str) -> bool:
    roles = table.roles(etype, canonical)
    title = display_name(title)
    return bool(roles and title) and not any(r in title or title in r for r in roles)


def _lookup(table: AliasTable, etype: str, name: str, context: str) -> str | None:
    """Exact lookup; a shared base name picks the homonym whose role fits the context."""
    members = table.homonyms(etype, name)
    if len(members) >= 2:
        for member in members:
            if _role_matches(table.roles(etype, member), context):
                return member
        return table.canonical(etype, name) or members[0]
    return table.canonical(etype, name)


def _cast_match(table: AliasTable, name: str, title: str, context: str) -> tuple[str, bool] | None:
    """Last resort for an unknown character name, against the novel's cast (see module doc).

    A given name alone (有福 → 孙有福) links when exactly one known name ends with it after
    its surname. A form of address (老陈, 陆先生) links to the only known character with
    that surname — narrowed by role when several fit; a full name (孙有福, title 掌柜)
    links to a known form of address with its surname and title (孙掌柜). Address-form links
    are not certain, so they do not teach the table aliases.
    """
    people = table.entities("character")
    given = [c for c in people if len(c) >= 3 and c[1:] == name]
    if len(name) >= 2 and len(given) == 1:
        return given[0], True
    surname = address_surname(name)
    if surname:
        hits = [
            c
            for c in people
            if split_qualified(c)[0].startswith(surname) and address_surname(c) is None
        ]
        fitting = [c for c in hits if _role_matches(table.roles("character", c), context)]
        hits = fitting or hits
        return (hits[0], False) if len(hits) == 1 else None
    if title:
        hits = [
            c
            for c in people
            if address_surname(c) == name[0]
            and (
                c.endswith(display_name(title)) or _role_matches(table.roles("character", c), title)
            )
        ]
        if len(hits) == 1:
            return hits[0], False
    return None


class _Resolver:
    def __init__(self, table: AliasTable) -> None:
        self.table = table
        self.dropped: dict[str, int] = {}
        self.mapping: dict[tuple[str, str], str] = {}
        self.known_before: dict[str, set[str]] = {
            etype: {name_key(n) for n in table.entities(etype)} for _, etype in KINDS
        }

    def count(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def identify(self, etype: str, item: Character | Place, title: str) -> tuple[str, bool]:
        """(canonical, certain): certain matches may teach the table new aliases."""
        table = self.table
        name = display_name(item.name)
        context = f"{title} {item.description}"
        if split_qualified(name)[1]:
            return table.canonical(etype, name) or name, True
        found = _lookup(table, etype, name, context)
        if found:
            return found, not _role_conflict(table, etype, found, title)
        stripped = strip_honorifics(name)
        if stripped != name:
            found = _lookup(table, etype, stripped, context)
            if found and _role_conflict(table, etype, found, title):
                return f"{stripped}（{display_name(title)}）", True
            if found:
                return found, True
        for alias in item.aliases:
            for form in dict.fromkeys((display_name(alias), strip_honorifics(alias))):
                if len(form) < 2 or is_generic(form) or nested_conflict(form, name):
                    continue
                found = _lookup(table, etype, form, context)
                if (
                    found
                    and not nested_conflict(found, name)
                    and not _role_conflict(table, etype, found, title)
                ):
                    return found, True
        if etype == "character":
            cast = _cast_match(table, name, title, context)
            if cast:
                return cast
        return stripped, True

    def learn(self, etype: str, canonical: str, item: Character | Place, title: str) -> None:
        table = self.table
        table.add_entity(etype, canonical, title)
        surfaces = [item.name, *item.aliases]
        for surface in [*surfaces, *(strip_honorifics(s) for s in surfaces)]:
            form = display_name(surface)
            if (
                len(form) < 2
                or is_generic(form)
                or nested_conflict(form, canonical)
                or len(table.homonyms(etype, form)) >= 2
            ):
                continue
            table.add_alias(etype, form, canonical)

    def split_scene_homonyms(self, items: list[Character]) -> list[Character]:
        """Same name, different titles, one answer: different people (see module doc)."""
        by_key: dict[str, list[Character]] = {}
        for item in items:
            by_key.setdefault(name_key(item.name), []).append(item)
        out: list[Character] = []
        for item in items:
            group = by_key[name_key(item.name)]
            titles = {display_name(i.title) for i in group if i.title}
            first_title = next((display_name(i.title) for i in group if i.title), "")
            base = display_name(item.name)
            title = display_name(item.title)
            known = self.table.roles("character", self.table.canonical("character", base) or "")
            keeps = title == first_title if not known else _role_matches(known, title)
            if len(titles) >= 2 and title and not keeps and not split_qualified(base)[1]:
                member = f"{base}（{title}）"
                item = item.model_copy(update={"name": member, "aliases": [*item.aliases, base]})
            out.append(item)
        return out

    def entities(self, etype: str, items: Sequence[Character | Place]) -> list[Any]:
        """Items renamed to their canonical names, then merged (aliases kept)."""
        renamed: list[Character | Place] = []
        for item in items:
            title = str(getattr(item, "title", ""))
            canonical, certain = self.identify(etype, item, title)
            if certain:
                self.learn(etype, canonical, item, title)
            else:
                self.table.add_entity(etype, canonical)
            surfaces = [display_name(s) for s in (item.name, *item.aliases)]
            for surface in surfaces[1:]:
                self.mapping.setdefault((etype, surface), canonical)
            self.mapping[(etype, surfaces[0])] = canonical
            aliases = [s for s in dict.fromkeys(surfaces) if s != canonical and not is_generic(s)]
            renamed.append(
                item.model_copy(update={"name": canonical, "aliases": aliases}, deep=True)
            )
        return _merge_by_key(renamed, "name")

    def end(self, etype: str, name: str, present: set[str], context: str = "") -> str | None:
        """Canonical name of a relation end, if it is in this chapter or known before."""
        form = display_name(name)
        canonical = self.mapping.get((etype, form))
        if canonical is None:
            canonical = _lookup(self.table, etype, form, context) or _lookup(
                self.table, etype, strip_honorifics(form), context
            )
        if canonical is None:
            return None
        key = name_key(canonical)
        if key in present or key in self.known_before[etype]:
            return canonical
        return None


def resolve(extraction: ChapterExtraction, table: AliasTable) -> ChapterExtraction:
    """Rewrite one chapter's result onto the novel's canonical entities (updates ``table``)."""
    return resolve_with_map(extraction, table).extraction


def resolve_with_map(extraction: ChapterExtraction, table: AliasTable) -> Resolution:
    """:func:`resolve`, also returning how every surface name was mapped."""
    r = _Resolver(table)
    characters = r.entities("character", r.split_scene_homonyms(list(extraction.characters)))
    locations = r.entities("location", list(extraction.locations))
    organizations = r.entities("organization", list(extraction.organizations))
    people = {name_key(c.name) for c in characters}
    places = {name_key(p.name) for p in locations}

    relations: dict[tuple[str, str, str], CharacterRelation] = {}
    for rel in extraction.character_relationships:
        kind = rel.relation.strip().upper()
        if kind not in CHARACTER_RELATION_TYPES:
            r.count("relation_type_off_schema")
            continue
        source = r.end("character", rel.source, people, rel.description)
        target = r.end("character", rel.target, people, rel.description)
        if source is None or target is None:
            r.count("relation_missing_end")
            continue
        if source == target:
            r.count("relation_self")
            continue
        key = (source, target, kind)
        if kind in SYMMETRIC_RELATIONS and (target, source, kind) in relations:
            continue
        relations.setdefault(
            key, rel.model_copy(update={"source": source, "target": target, "relation": kind})
        )

    events: list[Event] = []
    seen_events: dict[str, int] = {}
    for event in extraction.events:
        ename = display_name(event.name)
        participants = []
        for person in event.participants:
            who = r.end("character", person, people)
            if who is None:
                r.count("event_participant_unknown")
            elif who not in participants:
                participants.append(who)
        if ename in seen_events:
            kept = events[seen_events[ename]]
            kept.participants = list(dict.fromkeys([*kept.participants, *participants]))
            continue
        seen_events[ename] = len(events)
        events.append(event.model_copy(update={"name": ename, "participants": participants}))
    event_names = set(seen_events)

    event_rels: dict[tuple[str, str], EventRelation] = {}
    for erel in extraction.event_relationships:
        who = r.end("character", erel.character, people)
        ename = display_name(erel.event)
        if who is None or ename not in event_names:
            r.count("relation_missing_end")
            continue
        event_rels.setdefault(
            (who, ename), erel.model_copy(update={"character": who, "event": ename})
        )
    place_rels: dict[tuple[str, str], LocationRelation] = {}
    for lrel in extraction.location_relationships:
        where = r.end("location", lrel.location, places)
        ename = display_name(lrel.event)
        if where is None or ename not in event_names:
            r.count("relation_missing_end")
            continue
        place_rels.setdefault(
            (ename, where), lrel.model_copy(update={"event": ename, "location": where})
        )

    dropped = dict(extraction.dropped)
    for reason, count in r.dropped.items():
        dropped[reason] = dropped.get(reason, 0) + count
    result = extraction.model_copy(
        update={
            "characters": characters,
            "locations": locations,
            "organizations": organizations,
            "events": events,
            "character_relationships": list(relations.values()),
            "event_relationships": list(event_rels.values()),
            "location_relationships": list(place_rels.values()),
            "dropped": dropped,
        }
    )
    return Resolution(result, r.mapping)
