"""``run_node``: one node, every provider, one process; and its graceful stop.

The runtime knows nothing of the work: it receives a :class:`JobHandler` and the
application's :class:`NodeExtras` (an HTTP endpoint, background services, where the
provider list comes from) and imports nothing above itself; the chaishu application
composes both in :mod:`kgworker.chaishu.node`.

Start: wait for Redis (up to ``KG_STORE_DEADLINE``), load the scripts, start the endpoint,
then the supervisor starts the provider guard (which starts one consumer per provider),
lease renewal, the reaper, the registry, the pause watcher and the extras' services.
Stop (SIGTERM/SIGINT or the ``stop`` event): claiming stops at once; in-flight work has
``KG_SHUTDOWN_GRACE`` seconds; what is left is cancelled and put back immediately (claims
to the head of their queue, units through ``handler.release_unit``); a second signal skips
the grace. With ``KG_BURST`` the node stops by itself once it and its queues stay idle
(:mod:`kgworker.runtime.burst`). Exit code 0, 1 when a store stayed unreachable past the
deadline, 2 when the endpoint cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kgworker.config import Settings
from kgworker.queue import scripts
from kgworker.queue.connection import REDIS_ERRORS, create_redis
from kgworker.runtime.burst import burst_watch
from kgworker.runtime.consumer import ProviderConsumer
from kgworker.runtime.context import NodeContext
from kgworker.runtime.execution import requeue
from kgworker.runtime.handler import JobHandler, ReactsToRedisReset, ReportsStoreHealth
from kgworker.runtime.leases import Acker, renewal_loop
from kgworker.runtime.reaper import Reaper
from kgworker.runtime.registry import Registry
from kgworker.runtime.supervisor import Supervisor
from kgworker.runtime.watchers import (
    ProviderSource,
    check_pauses,
    configured_providers,
    pause_watch_loop,
    provider_guard_loop,
)

log = logging.getLogger(__name__)

#: A background service of the application, supervised like the runtime's own; it returns
#: when the stop event is set.
NodeService = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class EndpointRefused(Exception):
    """The endpoint cannot start (bad bind, port taken): the node exits with code 2."""


class Endpoint(Protocol):
    """Something the node serves (an HTTP endpoint), started before the first claim."""

    async def start(self, node: NodeContext) -> None: ...

    async def close(self) -> None: ...


@dataclass
class NodeExtras:
    """What an application adds to a node besides its handler (all optional)."""

    endpoint: Endpoint | None = None
    services: Mapping[str, NodeService] = field(default_factory=dict)
    #: The providers to serve, re-read every ``KG_WORKER_GUARD_INTERVAL`` (None from it
    #: keeps the last list); default ``KG_WORKER_PROVIDERS``.
    providers: ProviderSource | None = None
    #: Write a slot's registry entry before its job starts (one round trip per job), for
    #: applications whose jobs others judge by the registry (chaishu's zombie guard).
    show_tasks_before_start: bool = False


async def run_node(
    settings: Settings,
    handler: JobHandler,
    *,
    extras: NodeExtras | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run one worker node until stopped; returns the process exit code."""
    return await WorkerNode(settings, handler, extras).run(stop)


class WorkerNode:
    """Wires the runtime parts together for one run of the node."""

    def __init__(
        self, settings: Settings, handler: JobHandler, extras: NodeExtras | None = None
    ) -> None:
        block = settings.kg_claim_block_seconds
        self.settings = settings
        self.extras = extras or NodeExtras()
        # socket_timeout above the BLMOVE timeout, so a blocking claim is never cut off
        self.redis = create_redis(settings, socket_timeout=max(10.0, block + 10.0))
        self.ctx = NodeContext(settings, self.redis, handler)
        if isinstance(handler, ReportsStoreHealth):
            handler.use_health(self.ctx.health)
        if isinstance(handler, ReactsToRedisReset):
            self.ctx.on_redis_reset.append(handler.on_redis_reset)
        self.supervisor = Supervisor(self.ctx)
        self.acker = Acker(self.ctx)
        self.providers: list[str] = []
        self.consumers: dict[str, ProviderConsumer] = {}
        self.reaper = Reaper(self.ctx, self.providers)
        self.registry = Registry(self.ctx, self.providers)
        if self.extras.show_tasks_before_start:
            self.ctx.show_registry = self.registry.show_now
        self.stop_requested = asyncio.Event()
        self.force = asyncio.Event()
        self.providers_known = asyncio.Event()  #: the provider list has been read once

    def _on_signal(self) -> None:
        if self.stop_requested.is_set():
            log.warning("second signal: cancelling in-flight work now")
            self.force.set()
        else:
            log.info("signal received: stopping")
        self.stop_requested.set()

    async def run(self, stop: asyncio.Event | None = None) -> int:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal)
                installed.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread: the caller stops us through ``stop``
        waiter = None if stop is None else asyncio.create_task(self._relay(stop))
        try:
            if not await self._wait_for_redis():
                return 1
            if not await self._start_api():
                return 2
            await self._start()
            watch = asyncio.create_task(self.supervisor.watch(), name="supervisor")
            events = (self.stop_requested, self.supervisor.fatal)
            ended = [asyncio.create_task(event.wait()) for event in events]
            await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            for task in ended:
                task.cancel()
            await self._shutdown()
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            return self.supervisor.exit_code
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if waiter is not None:
                waiter.cancel()
            if self.extras.endpoint is not None:
                await self.extras.endpoint.close()
            await self.redis.aclose()

    async def _start_api(self) -> bool:
        """The endpoint, before any claim: a node that cannot serve it does not start."""
        if self.extras.endpoint is None:
            return True
        try:
            await self.extras.endpoint.start(self.ctx)
        except EndpointRefused as exc:
            log.critical("%s", exc)
            return False
        return True

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._on_signal()

    async def _wait_for_redis(self) -> bool:
        delay = 0.2
        while not self.stop_requested.is_set():
            try:
                await self.redis.ping()
                await scripts.load_all(self.redis)
                self.ctx.health.ok("redis")
                return True
            except REDIS_ERRORS as exc:
                self.ctx.health.failed("redis", exc)
                if self.ctx.health.overdue(self.settings.kg_store_deadline):
                    log.critical("redis unreachable past KG_STORE_DEADLINE: giving up")
                    return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), delay)
            delay = min(delay * 2, 5.0)
        return True

    async def _start(self) -> None:
        ctx, sup = self.ctx, self.supervisor
        source = self.extras.providers or configured_providers
        sup.start("provider-guard", lambda: provider_guard_loop(ctx, source, self._apply))
        sup.start("lease-renewal", lambda: renewal_loop(ctx))
        sup.start("reaper", self.reaper.run)
        sup.start("registry", self.registry.run)
        sup.start("pause-watch", lambda: pause_watch_loop(ctx, self.providers))
        for name, service in self.extras.services.items():
            sup.start(name, functools.partial(service, self.stop_requested))
        if self.settings.kg_burst:  # runtime/burst.py: stop once nothing is left to do
            sup.start("burst-watch", lambda: burst_watch(
                ctx, self.providers, self.providers_known, self.stop_requested.set))

    async def _apply(self, providers: list[str]) -> None:
        """Start consumers for new providers; drain the ones no longer listed."""
        try:
            await self._apply_providers(providers)
        finally:
            self.providers_known.set()

    async def _apply_providers(self, providers: list[str]) -> None:
        added = [p for p in providers if p not in self.providers]
        removed = [p for p in self.providers if p not in providers]
        for provider in removed:
            log.info("provider removed: draining", extra={"provider": provider})
            self.providers.remove(provider)
            consumer = self.consumers.pop(provider, None)
            if consumer is not None:
                consumer.draining = True
            self.ctx.pool.remove_provider(provider)
            self.ctx.pool.notify()
        if not added or self.ctx.stopping.is_set():
            return
        for provider in added:
            self.ctx.queue(provider)
        with contextlib.suppress(*REDIS_ERRORS):
            await check_pauses(self.ctx, added)  # a suspended provider is never claimed from
        for provider in added:
            log.info("serving provider", extra={"provider": provider})
            self.providers.append(provider)
            consumer = ProviderConsumer(self.ctx, self.acker, provider)
            self.consumers[provider] = consumer
            self.supervisor.start(f"consumer:{provider}", consumer.run)

    async def _shutdown(self) -> None:
        ctx, sup = self.ctx, self.supervisor
        started = time.monotonic()
        ctx.stopping.set()
        ctx.pool.notify()
        log.info(
            "stopping: no new claims; %d in flight, grace %g s",
            len(ctx.work),
            self.settings.kg_shutdown_grace,
        )
        await sup.stop("provider-guard")
        block = self.settings.kg_claim_block_seconds
        await asyncio.gather(
            *(
                sup.stop(name, wait=block + 0.5)
                for name in list(sup.services)
                if name.startswith("consumer:")
            )
        )
        for held in list(ctx.claims.values()):
            if held.failure is not None:  # waiting for a retry: requeue it now
                for task in held.tasks:
                    task.cancel()
        log.debug("shutdown: consumers stopped")
        await self._grace(started)
        log.debug("shutdown: grace over")
        await self._put_back()
        log.debug("shutdown: work put back")
        await self.reaper.release_locks()
        for name in list(sup.services):
            log.debug("shutdown: stopping %s", name)
            await sup.stop(name)
        await self.registry.remove()
        elapsed = time.monotonic() - started
        log.info("stopped in %.2f s; metrics %s", elapsed, ctx.metrics.snapshot())

    async def _grace(self, started: float) -> None:
        """Let slot work finish until the grace ends (or a second signal), then cancel it."""
        ctx = self.ctx
        remaining = self.settings.kg_shutdown_grace - (time.monotonic() - started)
        if ctx.work and remaining > 0 and not self.force.is_set():
            forced = asyncio.create_task(self.force.wait())
            await asyncio.wait({*ctx.work, forced}, timeout=remaining)
            forced.cancel()
            if ctx.work:
                await asyncio.wait({*ctx.work, forced}, timeout=0)
        left = list(ctx.work) + list(ctx.side)
        if ctx.work:
            log.warning("grace over: cancelling %d in-flight tasks", len(ctx.work))
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def _put_back(self) -> None:
        """Claims still held go back to the queue head now; units back to the handler."""
        ctx = self.ctx
        for held in list(ctx.claims.values()):
            if held.is_open and held.job is not None:
                with contextlib.suppress(Exception):
                    if await ctx.handler.is_complete(held.job):
                        await self.acker.ack(held.queue, held.claimed)
                        ctx.drop_claim(held)
                        ctx.metrics.completions[held.queue.provider] += 1
        results: list[object] = []
        for held in reversed(list(ctx.claims.values())):  # newest first: oldest ends at head
            try:
                await requeue(ctx, held)
            except REDIS_ERRORS as exc:
                results.append(exc)
            else:
                results.append(None)
        units = list(ctx.units.values())
        ctx.units.clear()
        results += await asyncio.gather(
            *(ctx.handler.release_unit(h.job, h.unit) for h in units), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("could not put work back: %s", result)
        if results:
            log.info("put back %d claims/units", len(results))
