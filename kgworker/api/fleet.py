"""The live fleet page of the node's HTTP endpoint, and the graph page of each book.

* ``GET /fleet`` — one static HTML/JS file (``observe/fleet_page.html``, no build step)
  that holds no data, so it is served without the token like ``/healthz``; ``/`` leads
  there. With ``KG_API_TOKEN`` set the page takes the token from ``#token=…`` (a fragment
  never reaches a server or a log) or from a form, keeps it in the tab's sessionStorage and
  sends it as ``Authorization: Bearer`` to the two routes below, like any other client.
* ``GET /fleet/data`` — what the page draws: the fleet snapshot of ``/status`` (nodes,
  providers, adaptive targets, tasks with rate and ETA), the chapter backlog, the newest
  dead-letter entries and the latest chapter errors.
* ``GET /graph/<novel_id>`` — the book's graph page (:mod:`kgworker.observe.graph_html`)
  rendered from Neo4j, read-only, the novel id its only input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from kgworker.config import Settings
from kgworker.observe.graph_html import render_graph_html
from kgworker.observe.metrics import MetricsExporter
from kgworker.queue.connection import RedisClient

if TYPE_CHECKING:
    from neo4j import AsyncDriver
    from sqlalchemy.ext.asyncio import AsyncEngine

    from kgworker.runtime.context import NodeContext

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parents[1] / "observe" / "fleet_page.html"
PUBLIC = frozenset({"/", "/fleet"})
DLQ_SHOWN = 10
NO_STORE = {"Cache-Control": "no-store"}


class Sources(Protocol):
    """What the routes read, from the endpoint's shared state (``api/server.py``)."""

    settings: Settings
    redis: RedisClient
    exporter: MetricsExporter
    node: NodeContext | None

    def engine(self) -> AsyncEngine: ...

    def driver(self) -> AsyncDriver: ...


def _reason(exc: BaseException) -> str:
    from kgworker.store.errors import classify

    return classify(exc).reason


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/fleet")


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(PAGE, headers={
        "Content-Type": "text/html; charset=utf-8", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff", **NO_STORE,
    })


async def fleet_data(state: Sources) -> dict[str, Any]:
    """The snapshot the page draws (see the module docstring)."""
    from kgworker.control.dlq import list_entries
    from kgworker.observe.status import gather, read_recent_errors
    from kgworker.runtime.registry import NODE_TTL

    engine = state.engine()
    data = await gather(state.settings, state.redis, engine, providers=state.exporter.served())
    for node in data["nodes"]:
        ttl = node.get("ttl")
        node["heartbeat_age"] = NODE_TTL - ttl if isinstance(ttl, int) and ttl >= 0 else None
    await state.exporter.refresh()
    data["backlog"] = dict(state.exporter.backlog)
    data["dlq"] = []
    try:
        for provider in [p["provider"] for p in data["providers"] if p["dead"]]:
            for entry in await list_entries(state.redis, provider, limit=DLQ_SHOWN):
                fields = entry.summary()
                data["dlq"].append({
                    "provider": provider, "index": fields.get("index"),
                    "reason": fields.get("reason"), "node": fields.get("node"),
                    "at": fields.get("at"), "raw": str(fields.get("raw", ""))[:200],
                })
    except Exception as exc:  # the rest of the page still draws
        data["errors"]["redis"] = _reason(exc)
    data["recent_errors"] = []
    if "mysql" not in data["errors"]:
        try:
            data["recent_errors"] = await read_recent_errors(engine)
        except Exception as exc:
            data["errors"]["mysql"] = _reason(exc)
    node = state.node
    data["node"] = {
        "name": state.settings.kg_worker_node_name,
        "providers": state.exporter.served(),
        "runtime": node.metrics.snapshot() if node is not None else None,
    }
    return data


def add_routes(app: web.Application, state: Sources, dumps: Callable[[Any], str]) -> None:
    """The page, its data and the graph pages, reading ``state``."""

    async def data(request: web.Request) -> web.Response:
        return web.json_response(await fleet_data(state), dumps=dumps, headers=NO_STORE)

    async def graph_page(request: web.Request) -> web.Response:
        from kgworker.observe.graph_read import add_aliases, read_book_graph

        novel_id = int(request.match_info["novel_id"])
        try:
            graph = await read_book_graph(state.driver(), novel_id,
                                          database=state.settings.neo4j_database)
        except Exception as exc:
            return web.json_response({"error": f"neo4j: {_reason(exc)}"}, status=503)
        if graph is None:
            return web.json_response({"error": f"no graph for novel {novel_id}"}, status=404)
        try:
            await add_aliases(state.engine(), graph, novel_id)
        except Exception as exc:  # aliases are a nicety: the graph still shows
            log.debug("graph page without aliases: %s", exc)
        return web.Response(text=render_graph_html(graph), content_type="text/html",
                            headers={"Referrer-Policy": "no-referrer", **NO_STORE})

    app.router.add_get("/", _root)
    app.router.add_get("/fleet", _page)
    app.router.add_get("/fleet/data", data)
    app.router.add_get(r"/graph/{novel_id:\d{1,18}}", graph_page)
