"""``run_worker``: a chaishu node — the handler, its duties and the HTTP endpoint, handed to
the generic runtime (:func:`kgworker.runtime.worker.run_node`).

What the application adds to the runtime (:class:`~kgworker.runtime.worker.NodeExtras`):

* the **HTTP endpoint** (``KG_API_ENABLED``), started before the first claim;
* the **fleet duties** (auto-retry, stale-task recovery, provider fallback), supervised on
  every node and run by one node at a time under a Redis lock — only on a database server
  (the demo's single-process SQLite has no fleet to recover);
* the **provider list**: ``KG_WORKER_PROVIDERS`` when set, otherwise the active
  ``ai_providers`` rows plus ``rules``, re-read every ``KG_WORKER_GUARD_INTERVAL`` (the last
  list is kept while MySQL cannot be read).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.duties import run_duties
from kgworker.chaishu.factory import RULES, build_handler
from kgworker.chaishu.handler import ChaishuHandler
from kgworker.chaishu.startup import wait_for_stores
from kgworker.config import Settings, load_settings
from kgworker.domain import clock
from kgworker.runtime.context import NodeContext
from kgworker.runtime.handler import JobHandler
from kgworker.runtime.watchers import ProviderSource
from kgworker.runtime.worker import NodeExtras, NodeService, run_node
from kgworker.store import catalog
from kgworker.store.dialect import is_server
from kgworker.store.errors import StoreUnreachable, StoreUnusable

log = logging.getLogger(__name__)


def banner(settings: Settings) -> list[str]:
    """Startup lines: node, providers, limits and store endpoints (never secrets)."""
    providers = ",".join(settings.kg_worker_providers) or "active ai_providers + rules"
    endpoints = " ".join(f"{name}={url}" for name, url in settings.endpoints().items())
    return [
        f"kgworker node {settings.kg_worker_node_name}: providers {providers}"
        + (" (burst: stops once its queues are empty)" if settings.kg_burst else ""),
        f"slots: {settings.provider_slot_limit} per provider, {settings.kg_max_total_processes}"
        f" per node; lease {settings.kg_lease_seconds:g} s, grace {settings.kg_shutdown_grace:g} s",
        f"stores: {endpoints}",
    ]


def provider_source(settings: Settings, engine: AsyncEngine | None) -> ProviderSource:
    """The providers a node serves (see the module docstring)."""

    async def read(ctx: NodeContext) -> list[str] | None:
        if settings.kg_worker_providers:
            return list(settings.kg_worker_providers)
        if engine is None:
            return None
        try:
            names = await catalog.active_provider_names(engine)
        except (SQLAlchemyError, OSError) as exc:
            ctx.health.failed("mysql", exc)
            return None
        ctx.health.ok("mysql")
        return list(dict.fromkeys([*names, RULES]))

    return read


def node_extras(settings: Settings, handler: JobHandler) -> NodeExtras:
    """Endpoint, duties and provider source for ``handler`` (a chaishu one or any other)."""
    endpoint = None
    if settings.kg_api_enabled:
        from kgworker.api.server import HttpEndpoint  # aiohttp: only when serving it

        endpoint = HttpEndpoint(settings)
    services: dict[str, NodeService] = {}
    engine = None
    if isinstance(handler, ChaishuHandler):
        engine = handler.engine
        if is_server(engine):
            chaishu = handler

            async def duties(stop: asyncio.Event) -> None:
                await run_duties(settings, chaishu.redis, chaishu.engine, stop,
                                 wake=chaishu.redis_reset)

            services["handler-duties"] = duties
    return NodeExtras(endpoint=endpoint, services=services,
                      providers=provider_source(settings, engine),
                      show_tasks_before_start=True)


async def run_worker(
    settings: Settings | None = None,
    *,
    handler: JobHandler | None = None,
    stop: asyncio.Event | None = None,
    **handler_parts: Any,
) -> int:
    """Run one node until stopped; returns the process exit code.

    Without ``handler`` the node first waits for Redis and MySQL
    (:mod:`kgworker.chaishu.startup`: exit 2 at once on an error waiting cannot fix, 1
    past ``KG_STORE_DEADLINE``), then builds the chaishu handler from ``settings`` (and
    ``handler_parts``, see :func:`~kgworker.chaishu.factory.build_handler`) and closes it
    at the end; a given handler stays the caller's.
    """
    settings = settings if settings is not None else load_settings()
    clock.configure(settings.kg_chaishu_utc_offset)
    owned = handler is None
    if handler is None:
        try:  # a store that refuses us ends the node here, in one line (no traceback)
            if not await wait_for_stores(settings, stop):
                return 0
            for line in banner(settings):  # once the stores answer: what this node does
                log.info(line)
            handler = await build_handler(settings, **handler_parts)
        except StoreUnusable as exc:
            log.critical("%s", exc)
            return 2
        except StoreUnreachable as exc:
            log.critical("%s", exc)
            return 1
    else:
        for line in banner(settings):
            log.info(line)
    try:
        return await run_node(settings, handler, extras=node_extras(settings, handler), stop=stop)
    finally:
        if owned and isinstance(handler, ChaishuHandler):
            await handler.aclose()
