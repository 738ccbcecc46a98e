"""Group commit for the graph: the chapters of one book that finish together are written in
one Neo4j transaction by one writer per book on this node.

Why: every chapter transaction of a book writes the same Novel node and mostly the same main
characters, so chapters written one transaction each take turns on those locks (and each
holds a Bolt connection while it waits: the pool runs dry). Here a chapter that finishes
while its book's writer is busy joins the next transaction instead: one lock turn and one
commit for all of them, one connection per book per node.

What does not change: each chapter's statements are those of
:meth:`~kgworker.store.graph_writer.GraphWriter.write_chapter`, so the graph is the same
whatever the grouping (the writes are idempotent and order-independent); the caller of
:meth:`GroupCommitWriter.write_chapter` gets its own chapter's result or error. A group the
database refuses is written again one chapter per transaction, so one bad chapter fails
alone. A caller cancelled while its chapter waits takes the chapter out of the group; one
cancelled while the group is in flight leaves it to be written, as a crash after the graph
commit would (the chapter is redone later and writes the same graph again).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kgworker.domain.graph_rows import ChapterGraph
from kgworker.store.graph_writer import GraphWriter, WriteResult

log = logging.getLogger(__name__)

#: Chapters per group at most: bounds the transaction's size and a retry's cost.
MAX_GROUP = 32


@dataclass(slots=True)
class _Waiting:
    graph: ChapterGraph
    result: asyncio.Future[WriteResult]


@dataclass(slots=True)
class GroupStats:
    """What the writer did, for tests and benchmarks."""

    chapters: int = 0
    transactions: int = 0
    fallbacks: int = 0
    largest: int = 0


class GroupCommitWriter:
    """A :class:`~kgworker.store.graph_writer.GraphSink` that groups chapters per novel."""

    def __init__(self, writer: GraphWriter, *, max_group: int = MAX_GROUP) -> None:
        self.writer = writer
        self.max_group = max(1, max_group)
        self.stats = GroupStats()
        self._waiting: dict[int, list[_Waiting]] = {}
        self._writers: dict[int, asyncio.Task[None]] = {}

    async def ensure_schema(self) -> None:
        await self.writer.ensure_schema()

    async def delete_task(self, task_id: int, novel_id: int) -> int:
        return await self.writer.delete_task(task_id, novel_id)

    async def write_chapter(self, graph: ChapterGraph) -> WriteResult:
        waiting = _Waiting(graph, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(graph.novel_id, []).append(waiting)
        if graph.novel_id not in self._writers:
            self._writers[graph.novel_id] = asyncio.create_task(
                self._drain(graph.novel_id), name=f"kgworker-graph-{graph.novel_id}")
        return await waiting.result

    @property
    def idle(self) -> bool:
        """No book has a writer or a waiting chapter."""
        return not self._writers and not self._waiting

    def waiting(self, novel_id: int) -> int:
        """Chapters of the novel queued for its next group."""
        return len(self._waiting.get(novel_id, ()))

    async def _drain(self, novel_id: int) -> None:
        """Write the novel's waiting chapters, a group at a time, until none wait."""
        group: list[_Waiting] = []
        try:
            while queue := self._waiting.get(novel_id):
                group = [w for w in queue[: self.max_group] if not w.result.done()]
                del queue[: self.max_group]
                if group:
                    await self._write_group(group)
                group = []
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for waiting in group + self._waiting.pop(novel_id, []):
                waiting.result.cancel()
            raise
        finally:
            if not self._waiting.get(novel_id):
                self._waiting.pop(novel_id, None)
            self._writers.pop(novel_id, None)

    async def _write_group(self, group: list[_Waiting]) -> None:
        self.stats.chapters += len(group)
        self.stats.largest = max(self.stats.largest, len(group))
        if len(group) > 1:
            self.stats.transactions += 1
            try:
                results = await self.writer.write_chapters([w.graph for w in group])
            except Exception as exc:
                self.stats.fallbacks += 1
                log.warning("graph group of %d chapters failed (%s): written one by one",
                            len(group), type(exc).__name__)
            else:
                for waiting, result in zip(group, results, strict=True):
                    if not waiting.result.done():  # its caller was cancelled meanwhile
                        waiting.result.set_result(result)
                return
        for waiting in group:
            self.stats.transactions += 1
            try:
                result = await self.writer.write_chapter(waiting.graph)
            except Exception as exc:
                if not waiting.result.done():
                    waiting.result.set_exception(exc)
            else:
                if not waiting.result.done():
                    waiting.result.set_result(result)
