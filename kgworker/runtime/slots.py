"""Slot accounting: a provider limit per provider and one limit for the whole node.

A consumer reserves slots *before* it claims, so the node never takes work it cannot start.
The node registry (``runtime/registry.py``) gives each slot its ``kg:worker:{N}`` entry and
reads the busy state and ``dirty`` set from here. The per-provider
limit can change at runtime (``kgw:provider_slots``), capped by the configured hard cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass


@dataclass(eq=False)
class Slot:
    """One unit of concurrency of a provider on this node."""

    id: str
    provider: str
    busy: bool = False
    task_id: int | None = None
    start_time: float | None = None

    def occupy(self, task_id: int | None) -> None:
        self.task_id = task_id
        self.start_time = time.time()


class SlotPool:
    """Free/busy slots per provider under ``min(provider limit)`` and a node-wide limit."""

    def __init__(self, *, node_id: str, node_limit: int, default_limit: int, hard_cap: int) -> None:
        self.node_id = node_id
        self.node_limit = node_limit
        self.default_limit = default_limit
        self.hard_cap = hard_cap
        self.slots: dict[str, list[Slot]] = {}
        self.overrides: dict[str, int] = {}
        self.dirty: set[Slot] = set()
        self.retired: list[Slot] = []
        self._numbers = itertools.count(1)
        self._busy_total = 0
        self._waiters: list[asyncio.Future[None]] = []

    # --- limits ----------------------------------------------------------------------
    def limit(self, provider: str) -> int:
        wanted = self.overrides.get(provider, self.default_limit)
        return max(0, min(wanted, self.hard_cap))

    def set_overrides(self, overrides: dict[str, int]) -> None:
        """Apply live per-provider limits (absent provider → the configured default)."""
        if overrides != self.overrides:
            self.overrides = dict(overrides)
            for provider in list(self.slots):
                self._resize(provider)
            self.notify()

    def add_provider(self, provider: str) -> None:
        self.slots.setdefault(provider, [])
        self._resize(provider)

    def remove_provider(self, provider: str) -> None:
        """Retire the provider's idle slots; busy ones retire when released."""
        for slot in self.slots.pop(provider, []):
            if not slot.busy:
                self.retired.append(slot)
                self.dirty.discard(slot)

    def _resize(self, provider: str) -> None:
        slots = self.slots[provider]
        target = self.limit(provider)
        while len(slots) < target:
            slot = Slot(f"{self.node_id}-{next(self._numbers)}", provider)
            slots.append(slot)
            self.dirty.add(slot)
        for slot in [s for s in slots if not s.busy][: max(0, len(slots) - target)]:
            slots.remove(slot)
            self.dirty.discard(slot)
            self.retired.append(slot)

    # --- acquiring -------------------------------------------------------------------
    def busy(self, provider: str) -> int:
        return sum(1 for slot in self.slots.get(provider, ()) if slot.busy)

    def free(self, provider: str) -> int:
        if provider not in self.slots:
            return 0
        by_provider = self.limit(provider) - self.busy(provider)
        return max(0, min(by_provider, self.node_limit - self._busy_total))

    def acquire(self, provider: str, count: int) -> list[Slot]:
        """Up to ``count`` free slots, marked busy now (synchronously: no race)."""
        count = min(count, self.free(provider))
        taken: list[Slot] = []
        for slot in self.slots.get(provider, ()):
            if len(taken) == count:
                break
            if not slot.busy:
                slot.busy = True
                taken.append(slot)
        self._busy_total += len(taken)
        return taken

    def release(self, slot: Slot) -> None:
        if not slot.busy:
            return
        slot.busy = False
        self._busy_total -= 1
        if slot.task_id is not None:
            slot.task_id = None
            slot.start_time = None
            self.dirty.add(slot)
        provider_slots = self.slots.get(slot.provider)
        if provider_slots is None or slot not in provider_slots:
            self.retired.append(slot)
        elif len(provider_slots) > self.limit(slot.provider):
            self._resize(slot.provider)
        self.notify()

    def mark_busy(self, slot: Slot, task_id: int) -> None:
        slot.occupy(task_id)
        self.dirty.add(slot)

    # --- waiting ---------------------------------------------------------------------
    def notify(self) -> None:
        """Wake every consumer waiting for a slot or for new open work."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_changed(self, seconds: float) -> None:
        """Return when a slot is freed or :meth:`notify` is called, or after ``seconds``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, seconds)

    def all_slots(self) -> list[Slot]:
        return [slot for slots in self.slots.values() for slot in slots]
