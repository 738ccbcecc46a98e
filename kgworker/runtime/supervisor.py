"""One task watches every consumer and background loop of the node.

A service that raises is logged with its traceback, counted (``metrics.crashes``) and
started again after an exponential backoff (capped; reset after a minute of health). A
service that returns is done (a drained consumer). The watch also enforces
``KG_STORE_DEADLINE``: a store unreachable for longer makes the node stop with exit code 1;
every other stop is clean (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kgworker.runtime.context import NodeContext

log = logging.getLogger(__name__)

ServiceFactory = Callable[[], Coroutine[Any, Any, None]]

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
HEALTHY_RESET_SECONDS = 60.0
STOP_ATTEMPTS = 10
STOP_RETRY_SECONDS = 0.5


@dataclass(eq=False)
class Service:
    name: str
    factory: ServiceFactory
    task: asyncio.Task[None] | None = None
    started_at: float = 0.0
    failures_in_row: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts, watches and restarts named services; see the module docstring."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.services: dict[str, Service] = {}
        self.exit_code = 0
        self.fatal = asyncio.Event()
        self._wake = asyncio.Event()

    def start(self, name: str, factory: ServiceFactory) -> None:
        service = Service(name, factory)
        self.services[name] = service
        self._launch(service)
        self._wake.set()

    def _launch(self, service: Service) -> None:
        service.task = asyncio.create_task(service.factory(), name=service.name)
        service.started_at = time.monotonic()
        service.restart_at = None

    async def stop(self, name: str, *, wait: float | None = None) -> None:
        """Stop one service: give it ``wait`` seconds to end by itself, then cancel it."""
        service = self.services.pop(name, None)
        if service is None or service.task is None:
            return
        task = service.task
        if wait:
            await asyncio.wait({task}, timeout=wait)
        # A cancellation can be swallowed by a driver (a Redis command cut short surfaces as
        # a connection error that the loop catches), so cancel again until the task ends.
        for _ in range(STOP_ATTEMPTS):
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=STOP_RETRY_SECONDS)
            if done:
                break
        else:
            log.error("%s ignored %d cancellations; leaving it behind", name, STOP_ATTEMPTS)
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def watch(self) -> None:
        """Run until cancelled: reap ended services, restart crashed ones, check stores."""
        while True:
            running = {s.task for s in self.services.values() if s.task and not s.task.done()}
            restarts = [s.restart_at for s in self.services.values() if s.restart_at]
            timeout = 1.0
            if restarts:
                timeout = max(0.0, min(timeout, min(restarts) - time.monotonic()))
            self._wake.clear()
            waker = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait(
                    {*running, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waker.cancel()
            self._check_services()
            self._check_stores()

    def _check_services(self) -> None:
        now = time.monotonic()
        for name, service in list(self.services.items()):
            task = service.task
            if service.restart_at is not None:
                if now >= service.restart_at:
                    log.info("restarting %s", name)
                    self.ctx.metrics.restarts[name] += 1
                    self._launch(service)
                continue
            if task is None or not task.done():
                continue
            if task.cancelled():
                del self.services[name]
                continue
            exc = task.exception()
            if exc is None:
                del self.services[name]  # finished by itself (e.g. a drained consumer)
                continue
            if now - service.started_at > HEALTHY_RESET_SECONDS:
                service.failures_in_row = 0
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**service.failures_in_row)
            service.failures_in_row += 1
            self.ctx.metrics.crashes[name] += 1
            log.error("%s crashed; restarting in %.1f s", name, delay, exc_info=exc)
            service.restart_at = now + delay

    def _check_stores(self) -> None:
        store = self.ctx.health.overdue(self.ctx.settings.kg_store_deadline)
        if store is not None and not self.fatal.is_set():
            log.critical(
                "%s unreachable for more than %.0f s: stopping",
                store,
                self.ctx.settings.kg_store_deadline,
            )
            self.exit_code = 1
            self.fatal.set()
