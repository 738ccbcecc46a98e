"""Group commit, whatever the store: the items of one key that arrive while that key's
writer is busy go into its next batch (one transaction, one lock turn, one commit).

One writer task per key runs while items of that key wait; an item that arrives meanwhile
joins the next batch, so the batch size follows the load by itself (1 when idle, up to
``max_group`` under load) and no item waits for a timer. The caller of :meth:`submit` gets
its own item's result or error. A batch that fails is done again one item at a time, so a
bad item fails alone. A caller cancelled while its item waits takes the item out; one
cancelled while its batch is in flight leaves the batch to finish (as a crash after the
commit would: each user says why that is safe for it).

Used for the graph (:mod:`kgworker.store.graph_batches`), the chapter commits
(:mod:`kgworker.store.finish_groups`) and the alias resolution
(:mod:`kgworker.chaishu.resolve_groups`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")


@dataclass(slots=True)
class _Waiting(Generic[I, R]):
    item: I
    result: asyncio.Future[R]


@dataclass(slots=True)
class GroupStats:
    """What the groups did, for tests and benchmarks (``chapters``: items submitted)."""

    chapters: int = 0
    transactions: int = 0
    fallbacks: int = 0
    largest: int = 0


class KeyedGroups(Generic[K, I, R]):
    """Batches per key: ``many(key, items)`` for a batch, ``one(key, item)`` for one item
    (a batch of one, and each item of a batch that failed)."""

    def __init__(
        self,
        many: Callable[[K, list[I]], Awaitable[list[R]]],
        one: Callable[[K, I], Awaitable[R]],
        *,
        max_group: int,
        name: str,
    ) -> None:
        self.many = many
        self.one = one
        self.max_group = max(1, max_group)
        self.name = name
        self.stats = GroupStats()
        self._waiting: dict[K, list[_Waiting[I, R]]] = {}
        self._writers: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: I) -> R:
        waiting: _Waiting[I, R] = _Waiting(item, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(key, []).append(waiting)
        if key not in self._writers:
            self._writers[key] = asyncio.create_task(
                self._drain(key), name=f"kgworker-{self.name}-{key}")
        return await waiting.result

    @property
    def idle(self) -> bool:
        """No key has a writer or a waiting item."""
        return not self._writers and not self._waiting

    def waiting(self, key: K) -> int:
        """Items of ``key`` queued for its next batch."""
        return len(self._waiting.get(key, ()))

    async def _drain(self, key: K) -> None:
        """Do the key's waiting items, a batch at a time, until none wait."""
        group: list[_Waiting[I, R]] = []
        try:
            while queue := self._waiting.get(key):
                group = [w for w in queue[: self.max_group] if not w.result.done()]
                del queue[: self.max_group]
                if group:
                    await self._run(key, group)
                group = []
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for waiting in group + self._waiting.pop(key, []):
                waiting.result.cancel()
            raise
        finally:
            if not self._waiting.get(key):
                self._waiting.pop(key, None)
            self._writers.pop(key, None)

    async def _run(self, key: K, group: list[_Waiting[I, R]]) -> None:
        self.stats.chapters += len(group)
        self.stats.largest = max(self.stats.largest, len(group))
        if len(group) > 1:
            self.stats.transactions += 1
            try:
                results = await self.many(key, [w.item for w in group])
            except Exception as exc:
                self.stats.fallbacks += 1
                log.warning("%s group of %d failed (%s): done one by one", self.name,
                            len(group), type(exc).__name__)
            else:
                for waiting, result in zip(group, results, strict=True):
                    if not waiting.result.done():  # its caller was cancelled meanwhile
                        waiting.result.set_result(result)
                return
        for waiting in group:
            self.stats.transactions += 1
            try:
                result = await self.one(key, waiting.item)
            except Exception as exc:
                if not waiting.result.done():
                    waiting.result.set_exception(exc)
            else:
                if not waiting.result.done():
                    waiting.result.set_result(result)
