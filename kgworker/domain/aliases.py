"""The alias table of one novel: canonical entities, their spellings and roles, by type.

Kept apart from the resolver because the pipeline persists it (``kgworker_entity_aliases``,
see :mod:`kgworker.store.schema.ours`) while the resolver only reads and grows it. Every
lookup goes through :func:`~kgworker.domain.names.name_key`, so width, script, spacing and
case never make two spellings differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from kgworker.domain.names import display_name, name_key, split_qualified

RowKind = Literal["entity", "alias", "role"]
#: ChapterExtraction list → entity type; the list names are also the roster keys.
KINDS: tuple[tuple[str, str], ...] = (
    ("characters", "character"),
    ("locations", "location"),
    ("organizations", "organization"),
)


class AliasRow(TypedDict):
    """One persisted fact: ``kind`` entity (alias = the canonical itself), alias, or role."""

    entity_type: str
    alias: str
    canonical: str
    kind: str


@dataclass
class _Entity:
    name: str
    roles: list[str] = field(default_factory=list)


class AliasTable:
    """The novel's names: canonical entities, their aliases and roles, by entity type.

    Only ever grows. ``to_rows``/``from_rows`` round-trip it through the
    ``kgworker_entity_aliases`` table; ``new_rows`` gives what was added since the last
    ``mark_saved`` so the pipeline inserts only those (INSERT IGNORE on the unique key).
    """

    def __init__(self) -> None:
        self._alias: dict[tuple[str, str], str] = {}
        self._entities: dict[tuple[str, str], _Entity] = {}
        self._homonyms: dict[tuple[str, str], list[str]] = {}
        self._rows: list[AliasRow] = []
        self._saved = 0
        #: Aliases refused because they already name another entity.
        self.conflicts = 0

    # --- lookups -----------------------------------------------------------------------
    def canonical(self, etype: str, name: str) -> str | None:
        """The canonical name ``name`` is known as (exact key match), if any."""
        return self._alias.get((etype, name_key(name)))

    def is_entity(self, etype: str, name: str) -> bool:
        return (etype, name_key(name)) in self._entities

    def roles(self, etype: str, canonical: str) -> list[str]:
        entity = self._entities.get((etype, name_key(canonical)))
        return list(entity.roles) if entity else []

    def homonyms(self, etype: str, base: str) -> list[str]:
        """Entities sharing the base name ``base``: the unqualified one first."""
        members = list(self._homonyms.get((etype, name_key(base)), []))
        primary = self._entities.get((etype, name_key(base)))
        if primary and members:
            members.insert(0, primary.name)
        return members

    def entities(self, etype: str) -> list[str]:
        return [e.name for (t, _), e in self._entities.items() if t == etype]

    def roster(self) -> dict[str, list[str]]:
        """Known canonical names by result list, for ``ChapterInput.roster``."""
        return {key: self.entities(etype) for key, etype in KINDS if self.entities(etype)}

    # --- growth ------------------------------------------------------------------------
    def add_entity(self, etype: str, name: str, role: str = "") -> str:
        canonical = display_name(name)
        key = (etype, name_key(canonical))
        if key not in self._entities:
            self._entities[key] = _Entity(canonical)
            self._alias.setdefault(key, canonical)
            self._row(etype, canonical, canonical, "entity")
            base, qualifier = split_qualified(canonical)
            if qualifier:
                self._homonyms.setdefault((etype, name_key(base)), []).append(canonical)
                role = role or qualifier
        if role:
            self.add_role(etype, canonical, role)
        return canonical

    def add_role(self, etype: str, canonical: str, role: str) -> None:
        entity = self._entities[(etype, name_key(canonical))]
        role = display_name(role)
        if role and role not in entity.roles:
            entity.roles.append(role)
            self._row(etype, role, entity.name, "role")

    def add_alias(self, etype: str, alias: str, canonical: str) -> bool:
        """Point ``alias`` at ``canonical``; False (and counted) if it names another entity."""
        key = (etype, name_key(alias))
        current = self._alias.get(key)
        if current is not None:
            if current != canonical:
                self.conflicts += 1
            return current == canonical
        self._alias[key] = canonical
        self._row(etype, display_name(alias), canonical, "alias")
        return True

    def _row(self, etype: str, alias: str, canonical: str, kind: RowKind) -> None:
        self._rows.append(AliasRow(entity_type=etype, alias=alias, canonical=canonical, kind=kind))

    # --- persistence -------------------------------------------------------------------
    def to_rows(self) -> list[AliasRow]:
        return list(self._rows)

    def new_rows(self) -> list[AliasRow]:
        return self._rows[self._saved :]

    def mark_saved(self) -> None:
        self._saved = len(self._rows)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> AliasTable:
        """Rebuild from persisted rows (in insertion order); the result has no new rows."""
        table = cls()
        rows = list(rows)
        order = {"entity": 0, "role": 1, "alias": 2}
        for row in sorted(rows, key=lambda r: order.get(str(r["kind"]), 3)):
            etype, alias, canonical = (
                str(row["entity_type"]),
                str(row["alias"]),
                str(row["canonical"]),
            )
            if row["kind"] == "entity":
                table.add_entity(etype, canonical)
            elif row["kind"] == "role" and table.is_entity(etype, canonical):
                table.add_role(etype, canonical, alias)
            elif row["kind"] == "alias" and table.is_entity(etype, canonical):
                table.add_alias(etype, alias, canonical)
        table.mark_saved()
        table.conflicts = 0
        return table
