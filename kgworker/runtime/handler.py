"""What the runtime asks of the code that does the work: the :class:`JobHandler` protocol.

A queue item is one chaishu task (a book). Its work is split into *units* (chapters) so
that one book can be worked by every free slot of every node serving its provider, without
the producer pushing one queue item per chapter:

1. A node claims the queue item (a Redis claim with a lease) and calls :meth:`JobHandler.start`
   once. ``DONE`` means nothing is left to do: the claim is acknowledged at once.
   ``OPEN`` means the job has units: the claim stays held (its lease renewed) and the job is
   listed in the provider's ``open`` hash so every node can help.
2. Any slot of any node with nothing better to do calls :meth:`JobHandler.claim_unit` on
   the open jobs of its provider. The handler claims a unit atomically across the fleet
   (e.g. ``SELECT … FOR UPDATE SKIP LOCKED`` on chapter rows) with a lease of its own,
   and the slot runs it with :meth:`JobHandler.run_unit`.
3. One timer per node renews all unit leases of the node in one call,
   :meth:`JobHandler.renew_units`; a unit whose lease was lost is cancelled locally. On
   shutdown or a failed unit, :meth:`JobHandler.release_unit` puts it back at once.
4. The claiming node checks :meth:`JobHandler.is_complete` after each local unit and every
   couple of seconds, and acknowledges the Redis claim when it is true. Finalising the task
   (exactly once) is the handler's business, inside ``run_unit`` or ``is_complete``.

Errors: :class:`PermanentJobError` from ``start`` dead-letters the item with its reason;
any other exception returns the item to the head of its queue after a backoff, counted as
an attempt, so a job that always fails ends in the dead-letter queue instead of looping.
An exception escaping ``run_unit`` releases the unit; handlers should record a unit's own
failure themselves and return normally.

:class:`SimpleHandler` adapts ``async def fn(job) -> None`` into a job that is done inside
``start`` in the claiming slot: no open list, no unit calls, no extra Redis traffic.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

#: Identifies a unit across the fleet, e.g. ``"17:5023"`` for task 17, chapter 5023.
UnitKey: TypeAlias = str


class JobStart(enum.Enum):
    """What :meth:`JobHandler.start` found."""

    OPEN = "open"  #: units to work: hold the claim, let the fleet claim units
    DONE = "done"  #: nothing (more) to do: acknowledge the claim now
    #: the item is stale (its task is gone, or someone else works it): acknowledge it and
    #: count it as dropped — not poison, so not dead-lettered
    DROPPED = "dropped"


class PermanentJobError(Exception):
    """The job can never succeed (bad task, refused status…): dead-letter it with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed queue item, as seen by the node that claimed it or by a helping node."""

    provider: str  #: queue provider, lower-cased (the queue is ``kg:ai_queue:{provider}``)
    task_id: int
    claim_id: str  #: unique per claim; a re-claimed item gets a new one
    raw: bytes  #: the queue item exactly as the producer pushed it
    payload: Mapping[str, Any] = field(compare=False, hash=False)  #: the decoded item
    node: str = ""  #: node that holds the claim
    attempts: int = 0  #: times this item stalled or failed before this claim

    @property
    def provider_name(self) -> str:
        """The provider as the producer named it (``ai_providers.name``)."""
        name = self.payload.get("provider")  # chaishu's producer may pad it (" DeepSeek ")
        return name.strip() if isinstance(name, str) and name.strip() else self.provider


@dataclass(frozen=True, slots=True)
class Unit:
    """One claimed piece of a job (a chapter). ``data`` is the handler's own."""

    key: UnitKey
    data: Any = field(default=None, compare=False, hash=False)


@runtime_checkable
class JobHandler(Protocol):
    """The work behind a queue item; see the module docstring for the life cycle."""

    async def start(self, job: Job) -> JobStart:
        """Called once by the claiming node (e.g. mark the task running in MySQL)."""
        ...

    async def claim_unit(self, job: Job, owner: str, lease_seconds: float) -> Unit | None:
        """Claim one unit of ``job`` for ``owner`` (fleet-atomic); None = nothing now."""
        ...

    async def run_unit(self, job: Job, unit: Unit) -> None:
        """Do the unit's work. Cancelled when its lease is lost or at shutdown."""
        ...

    async def renew_units(
        self, owner: str, units: Sequence[Unit], lease_seconds: float
    ) -> set[UnitKey]:
        """Extend the leases of ``units`` held by ``owner``; return the keys that were lost."""
        ...

    async def release_unit(self, job: Job, unit: Unit) -> None:
        """Give the unit back now (shutdown, failure) instead of waiting for its lease."""
        ...

    async def is_complete(self, job: Job) -> bool:
        """True when every unit is finished and the job can be acknowledged."""
        ...


class StoreHealthSink(Protocol):
    """Where a handler reports its stores (the node's :class:`~.context.StoreHealth`)."""

    def ok(self, store: str) -> None: ...

    def failed(self, store: str, exc: BaseException) -> None: ...

    def blocking(self) -> str | None: ...


@runtime_checkable
class ReportsStoreHealth(Protocol):
    """An optional capability: the handler reports outages of its own stores to the node,
    which then holds back new claims and ends the node past ``KG_STORE_DEADLINE``."""

    def use_health(self, health: StoreHealthSink) -> None: ...


@runtime_checkable
class ClaimsInBatches(Protocol):
    """An optional capability: several units of a job claimed in one call (one store
    transaction), so a node with many free slots is not held back by its claim rate."""

    async def claim_units(
        self, job: Job, owner: str, lease_seconds: float, limit: int
    ) -> list[Unit]: ...


@runtime_checkable
class ReactsToRedisReset(Protocol):
    """An optional capability: told when the node finds that Redis lost its data (a
    restart without persistence), to rebuild what it keeps there."""

    async def on_redis_reset(self) -> None: ...


JobFunction: TypeAlias = Callable[[Job], Awaitable[None]]


class SimpleHandler:
    """A single-unit job: ``fn(job)`` runs inside ``start`` in the claiming slot."""

    def __init__(self, fn: JobFunction) -> None:
        self.fn = fn

    async def start(self, job: Job) -> JobStart:
        await self.fn(job)
        return JobStart.DONE

    async def claim_unit(self, job: Job, owner: str, lease_seconds: float) -> Unit | None:
        return None

    async def run_unit(self, job: Job, unit: Unit) -> None:  # pragma: no cover - never called
        raise RuntimeError("SimpleHandler has no units")

    async def renew_units(
        self, owner: str, units: Sequence[Unit], lease_seconds: float
    ) -> set[UnitKey]:
        return set()

    async def release_unit(self, job: Job, unit: Unit) -> None:
        return None

    async def is_complete(self, job: Job) -> bool:
        return True
