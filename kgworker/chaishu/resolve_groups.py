"""Entity resolution against the novel's alias table, grouped per novel on this node.

Resolution is a read-modify-write of the novel's table under its lock
(:meth:`kgworker.store.aliases.AliasStore.locked`): one lock turn, one reload, one INSERT
and one commit per call. Chapters of one book extracted at the same moment would take turns
on that lock one by one; grouped (:class:`~kgworker.store.groups.KeyedGroups`), the ones that
arrive while the book's resolver is busy are resolved in the next turn together, in order,
each against the table as the chapters before it left it — exactly what taking turns one
by one would give, for the cost of one turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from kgworker.domain.aliases import AliasTable
from kgworker.domain.extraction import ChapterExtraction
from kgworker.domain.graph_rows import map_relation_types
from kgworker.domain.resolution import resolve
from kgworker.store.aliases import AliasStore
from kgworker.store.groups import GroupStats, KeyedGroups

#: Chapters resolved in one lock turn at most.
MAX_GROUP = 32


async def alias_table(aliases: AliasStore, novel_id: int) -> AliasTable:
    """The novel's alias table as committed now (the roster of the next chapter)."""
    return AliasTable.from_rows(await aliases.rows(novel_id))


async def resolve_chapters(
    aliases: AliasStore, novel_id: int, extractions: Sequence[ChapterExtraction]
) -> list[ChapterExtraction]:
    """Resolve chapters in turn against the novel's table under its lock; new rows are
    committed before this returns.

    Relation types are mapped onto the allowed seven before resolution, which keeps only
    those (an answer saying 师父 would otherwise lose its relations there).
    """
    async with aliases.locked(novel_id) as session:
        table = AliasTable.from_rows(session.rows)
        results = [resolve(map_relation_types(extraction), table) for extraction in extractions]
        session.append(table.new_rows())
    table.mark_saved()
    return results


async def resolve_chapter(
    aliases: AliasStore, novel_id: int, extraction: ChapterExtraction
) -> ChapterExtraction:
    """:func:`resolve_chapters` of one chapter."""
    return (await resolve_chapters(aliases, novel_id, [extraction]))[0]


class ResolveGroups:
    """The node's resolutions, grouped per novel."""

    def __init__(self, aliases: AliasStore, *, max_group: int = MAX_GROUP) -> None:
        self._groups: KeyedGroups[int, ChapterExtraction, ChapterExtraction] = KeyedGroups(
            lambda novel_id, chapters: resolve_chapters(aliases, novel_id, chapters),
            lambda novel_id, chapter: resolve_chapter(aliases, novel_id, chapter),
            max_group=max_group, name="resolve",
        )

    @property
    def stats(self) -> GroupStats:
        return self._groups.stats

    async def resolve(self, novel_id: int, extraction: ChapterExtraction) -> ChapterExtraction:
        return await self._groups.submit(novel_id, extraction)
