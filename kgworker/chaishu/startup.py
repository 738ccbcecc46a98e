"""Before a node builds anything: wait until Redis and MySQL answer, or say why they do not.

A node started while its stores restart (a rollout, a reboot) waits with one line per
attempt — which store, where, why, and whether the other one is down too. A node whose
credentials, database name or TLS settings are wrong stops at once
(:class:`~kgworker.store.errors.StoreUnusable`, exit 2: systemd and supervisor do not
restart it in a loop) instead of retrying for ``KG_STORE_DEADLINE``; past that deadline
it stops with :class:`~kgworker.store.errors.StoreUnreachable` (exit 1). Neo4j is not
waited for: the worker runs without it until a chapter needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import text

from kgworker.config import Settings
from kgworker.queue.connection import create_redis
from kgworker.store.errors import StoreUnreachable, StoreUnusable, classify, endpoint
from kgworker.store.mysql import create_engine

log = logging.getLogger(__name__)

#: Longest single probe: asyncmy's connect timeout is 10 s.
PROBE_TIMEOUT = 12.0
FIRST_DELAY, MAX_DELAY = 0.5, 5.0


async def _probe(check: Callable[[], Awaitable[object]]) -> BaseException | None:
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT)
    except Exception as exc:  # every failure is classified by the caller
        return exc
    return None


async def wait_for_stores(settings: Settings, stop: asyncio.Event | None = None) -> bool:
    """True once Redis and MySQL answer; False when stopped (a signal, ``stop``) first."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopped.set)
            installed.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread: the caller's ``stop`` event stops us
    relay = None if stop is None else asyncio.create_task(_relay(stop, stopped))
    # no client-side retries: each probe is one attempt, so the lines come at the delays
    redis = create_redis(settings, socket_timeout=PROBE_TIMEOUT, retry=Retry(NoBackoff(), 0))
    engine = create_engine(settings, pool_size=1, max_overflow=0)

    async def mysql() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        return await _wait(settings, {"redis": redis.ping, "mysql": mysql}, stopped)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if relay is not None:
            relay.cancel()
        await redis.aclose()
        await engine.dispose()


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _wait(
    settings: Settings, checks: dict[str, Callable[[], Awaitable[object]]], stopped: asyncio.Event
) -> bool:
    started = time.monotonic()
    deadline = settings.kg_store_deadline
    delay = FIRST_DELAY
    waited_before = False
    while not stopped.is_set():
        results = await asyncio.gather(*(_probe(check) for check in checks.values()))
        failing = {s: e for s, e in zip(checks, results, strict=True) if e is not None}
        if not failing:
            if waited_before:
                log.info("stores reachable: %s", ", ".join(checks))
            return True
        parts: list[str] = []
        for store, exc in failing.items():
            fault = classify(exc)
            where = f"{store} {endpoint(settings, store)}"
            if fault.fatal:
                raise StoreUnusable(
                    f"{where}: {fault.reason} — waiting cannot fix this: check the settings"
                    " (kgworker config show) and the server's accounts"
                )
            parts.append(f"{where}{' also' if parts else ''} unreachable ({fault.reason})")
        line = "; ".join(parts)
        waited = time.monotonic() - started
        if waited >= deadline:
            raise StoreUnreachable(
                f"{line}: still failing after {waited:.0f} s (KG_STORE_DEADLINE="
                f"{deadline:g}); giving up"
            )
        pause = min(delay, deadline - waited)
        log.warning("waiting for stores: %s; retrying in %.1f s", line, pause)
        waited_before = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), pause)
        delay = min(delay * 2, MAX_DELAY)
    log.info("stopped while waiting for the stores")
    return False
