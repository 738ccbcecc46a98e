"""State shared by the parts of one running node: what it holds, its limits, its health.

Everything here lives on one event loop, so plain dicts and sets need no locks. The claim
and unit tables are the single source of truth for renewal (what to renew), for the lease
loss path (what to cancel) and for shutdown (what to put back).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from kgworker.config import Settings
from kgworker.queue.connection import RedisClient
from kgworker.queue.provider_queue import Claimed, ProviderQueue
from kgworker.runtime.handler import Job, JobHandler, SimpleHandler, Unit, UnitKey
from kgworker.runtime.metrics import RuntimeMetrics
from kgworker.runtime.slots import Slot, SlotPool
from kgworker.store.errors import classify, endpoint

log = logging.getLogger(__name__)


@dataclass(eq=False)
class HeldClaim:
    """A Redis claim this node holds, and the local tasks bound to it."""

    queue: ProviderQueue
    claimed: Claimed
    job: Job | None = None
    is_open: bool = False
    failure: str | None = None  #: set while waiting to be retried
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    renewed_at: float = field(default_factory=time.monotonic)
    unit_done: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.time)  #: epoch s the claim was taken


@dataclass(eq=False)
class HeldUnit:
    """A unit this node is working, under the handler's own lease."""

    job: Job
    unit: Unit
    task: asyncio.Task[None] | None = None


#: Stores without which no claimed work can finish (Redis trouble is handled where it hits).
BLOCKING_STORES = frozenset({"mysql", "neo4j"})


class StoreHealth:
    """Since when each store has been failing; the supervisor exits past the deadline."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings
        self.failing_since: dict[str, float] = {}

    def ok(self, store: str) -> None:
        if self.failing_since.pop(store, None) is not None:
            log.info("%s reachable again", store)

    def failed(self, store: str, exc: BaseException) -> None:
        if store not in self.failing_since:
            self.failing_since[store] = time.monotonic()
            where = f" {endpoint(self.settings, store)}" if self.settings is not None else ""
            log.warning("%s%s unreachable: %s", store, where, classify(exc).reason)

    def blocking(self) -> str | None:
        """A failing store that work needs (MySQL, Neo4j): new claims wait while it is out."""
        return next((s for s in self.failing_since if s in BLOCKING_STORES), None)

    def overdue(self, deadline: float) -> str | None:
        now = time.monotonic()
        for store, since in self.failing_since.items():
            if now - since > deadline:
                return store
        return None


class NodeContext:
    """One node's runtime state, passed to every consumer and background loop."""

    def __init__(self, settings: Settings, redis: RedisClient, handler: JobHandler) -> None:
        self.settings = settings
        self.redis = redis
        self.handler = handler
        self.has_units = not isinstance(handler, SimpleHandler)
        self.node = settings.kg_worker_node_name
        self.run_id = uuid.uuid4().hex[:8]
        #: owner of unit leases: unique per process run, so a restarted node is a new owner
        self.owner = f"{self.node}-{self.run_id}"
        self.metrics = RuntimeMetrics()
        self.health = StoreHealth(settings)
        self.pool = SlotPool(
            node_id=self.owner,
            node_limit=settings.kg_max_total_processes,
            default_limit=settings.kg_workers_per_provider,
            hard_cap=settings.kg_max_processes_per_provider,
        )
        self.queues: dict[str, ProviderQueue] = {}
        self.resumed: dict[str, asyncio.Event] = {}
        self.claims: dict[str, HeldClaim] = {}
        self.units: dict[UnitKey, HeldUnit] = {}
        self.work: set[asyncio.Task[None]] = set()  #: tasks occupying a slot
        self.side: set[asyncio.Task[None]] = set()  #: keepers and retry waits
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        #: Shows a slot's task in the registry at once (set by the node when the
        #: application asks for it: a job start then awaits it).
        self.show_registry: Callable[[Slot], Awaitable[None]] | None = None
        #: Called when Redis is found to have lost its data (the registry notices).
        self.on_redis_reset: list[Callable[[], Awaitable[None]]] = []

    @property
    def lease_seconds(self) -> float:
        return self.settings.kg_lease_seconds

    def queue(self, provider: str) -> ProviderQueue:
        """The queue object of ``provider``, created once per process."""
        queue = self.queues.get(provider)
        if queue is None:
            queue = ProviderQueue(
                self.redis,
                provider,
                node=self.node,
                lease_seconds=self.settings.kg_lease_seconds,
                max_stalls=self.settings.kg_max_stalls,
                owner=self.owner,
            )
            self.queues[provider] = queue
            self.resumed.setdefault(provider, asyncio.Event()).set()
        return queue

    def spawn(
        self, coro: Coroutine[Any, Any, None], *, work: bool, name: str
    ) -> asyncio.Task[None]:
        """Start a tracked task: ``work`` tasks hold a slot and get the shutdown grace."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        bucket = self.work if work else self.side
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        return task

    def drop_claim(self, held: HeldClaim) -> None:
        self.claims.pop(held.claimed.claim_id, None)
