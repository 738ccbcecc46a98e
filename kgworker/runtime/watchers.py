"""Background readers of fleet-wide state: pauses, live slot limits, the provider list.

The pause watcher reads every provider's suspend key and the live slot
overrides (``kgw:provider_slots``) in one pipeline per second, and gates the consumers with
events, so a claim costs no extra round trip. The provider guard re-reads which providers
to serve every ``KG_WORKER_GUARD_INTERVAL`` from a source the application gives
(:class:`~kgworker.runtime.worker.NodeExtras`; chaishu's reads ``ai_providers``); when the
source cannot answer it keeps the last list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kgworker.keys import PROVIDER_SLOTS_KEY, suspend_key
from kgworker.queue.connection import REDIS_ERRORS
from kgworker.runtime.context import NodeContext

log = logging.getLogger(__name__)

PAUSE_CHECK_SECONDS = 1.0


async def check_pauses(ctx: NodeContext, providers: list[str]) -> None:
    """One pipeline: every suspend key and the live slot limits."""
    pipe = ctx.redis.pipeline(transaction=False)
    for provider in providers:
        pipe.exists(suspend_key(provider))
    pipe.hgetall(PROVIDER_SLOTS_KEY)
    *suspended, overrides = await pipe.execute()
    for provider, paused in zip(providers, suspended, strict=True):
        event = ctx.resumed.setdefault(provider, asyncio.Event())
        if paused and event.is_set():
            log.info("provider suspended: not claiming", extra={"provider": provider})
            event.clear()
        elif not paused and not event.is_set():
            log.info("provider resumed", extra={"provider": provider})
            event.set()
    limits: dict[str, int] = {}
    for name, value in overrides.items():
        if _text(value) == "auto":  # adaptive: the fleet-wide permit binds, not the slots
            limits[_text(name).lower()] = ctx.pool.hard_cap
            continue
        try:
            limits[_text(name).lower()] = int(_text(value).strip('"'))
        except ValueError:
            continue
    ctx.pool.set_overrides(limits)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def pause_watch_loop(ctx: NodeContext, providers: list[str]) -> None:
    while True:
        try:
            await check_pauses(ctx, list(providers))
            ctx.health.ok("redis")
        except REDIS_ERRORS as exc:
            ctx.health.failed("redis", exc)
        await asyncio.sleep(PAUSE_CHECK_SECONDS)


#: Reads the providers to serve now; None when they could not be read (keep the last list).
#: It reports store trouble through ``ctx.health``.
ProviderSource = Callable[[NodeContext], Awaitable[list[str] | None]]
ApplyProviders = Callable[[list[str]], Awaitable[None]]


async def configured_providers(ctx: NodeContext) -> list[str] | None:
    """The default source: ``KG_WORKER_PROVIDERS`` as configured (an empty list serves none)."""
    return list(ctx.settings.kg_worker_providers)


async def provider_guard_loop(
    ctx: NodeContext, source: ProviderSource, apply: ApplyProviders
) -> None:
    """Re-read the provider list on an interval and hand every change to ``apply``."""
    current: list[str] | None = None
    while True:
        found = await source(ctx)
        if found is not None and found != current:
            await apply(found)
            current = found
        delay = ctx.settings.kg_worker_guard_interval if current is not None else 2.0
        await asyncio.sleep(min(delay, ctx.settings.kg_worker_guard_interval))
