"""Group commit for the graph: the chapters of one book that finish together are written in
one Neo4j transaction by one writer per book on this node.

Why: every chapter transaction of a book writes the same Novel node and mostly the same main
characters, so chapters written one transaction each take turns on those locks (and each
holds a Bolt connection while it waits: the pool runs dry). Here a chapter that finishes
while its book's writer is busy joins the next transaction instead: one lock turn and one
commit for all of them, one connection per book per node.

The batching itself is :class:`~kgworker.store.groups.KeyedGroups`. What does not change:
a group's rows are merged per node first (:mod:`kgworker.domain.graph_merge`) into what its
chapters written one by one would leave, so the graph is the same whatever the grouping
(the writes are idempotent and order-independent); the caller of
:meth:`GroupCommitWriter.write_chapter` gets its own chapter's result or error. A group the
database refuses is written again one chapter per transaction, so one bad chapter fails
alone. A caller cancelled while its chapter waits takes the chapter out of the group; one
cancelled while the group is in flight leaves it to be written, as a crash after the graph
commit would (the chapter is redone later and writes the same graph again).
"""

from __future__ import annotations

from kgworker.domain.graph_rows import ChapterGraph
from kgworker.store.graph_writer import GraphWriter, WriteResult
from kgworker.store.groups import GroupStats, KeyedGroups

__all__ = ["MAX_GROUP", "GroupCommitWriter", "GroupStats"]

#: Chapters per group at most: bounds the transaction's size and a retry's cost.
MAX_GROUP = 32


class GroupCommitWriter:
    """A :class:`~kgworker.store.graph_writer.GraphSink` that groups chapters per novel."""

    def __init__(self, writer: GraphWriter, *, max_group: int = MAX_GROUP) -> None:
        self.writer = writer
        self._groups: KeyedGroups[int, ChapterGraph, WriteResult] = KeyedGroups(
            lambda _novel, graphs: writer.write_chapters(graphs),
            lambda _novel, graph: writer.write_chapter(graph),
            max_group=max_group, name="graph",
        )

    @property
    def stats(self) -> GroupStats:
        return self._groups.stats

    @property
    def max_group(self) -> int:
        return self._groups.max_group

    async def ensure_schema(self) -> None:
        await self.writer.ensure_schema()

    async def delete_task(self, task_id: int, novel_id: int) -> int:
        return await self.writer.delete_task(task_id, novel_id)

    async def write_chapter(self, graph: ChapterGraph) -> WriteResult:
        return await self._groups.submit(graph.novel_id, graph)

    @property
    def idle(self) -> bool:
        """No book has a writer or a waiting chapter."""
        return self._groups.idle

    def waiting(self, novel_id: int) -> int:
        """Chapters of the novel queued for its next group."""
        return self._groups.waiting(novel_id)
