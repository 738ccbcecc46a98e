"""The node's HTTP endpoint: /metrics, /healthz, /readyz, /status, ``POST /tasks`` and the
fleet page (``/fleet``, ``/fleet/data``, ``/graph/<novel_id>``: :mod:`kgworker.api.fleet`).

Served by the worker process itself (aiohttp on the node's event loop), so ``/healthz``
answering *is* the proof that the loop is alive. Bound to anything but loopback the
endpoint refuses to start without ``KG_API_TOKEN`` — the EasySight node's API had no
authentication, ours must — and with a token every route but ``/healthz`` and the fleet
page's static HTML (which holds no data) wants ``Authorization: Bearer <token>``, compared
in constant time. ``/readyz`` runs the same
store checks as ``kgworker doctor``, cached briefly so probes cannot hammer the stores.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kgworker.api import fleet
from kgworker.config import Settings
from kgworker.control.enqueue import enqueue_task, parse_task_request
from kgworker.control.errors import ControlError
from kgworker.observe.endpoint_file import publish_endpoint
from kgworker.observe.health import StoreCheck, check_stores
from kgworker.observe.metrics import MetricsExporter
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.runtime.worker import EndpointRefused

if TYPE_CHECKING:
    from neo4j import AsyncDriver
    from sqlalchemy.ext.asyncio import AsyncEngine

    from kgworker.runtime.context import NodeContext

log = logging.getLogger(__name__)

READY_CACHE_SECONDS = 2.0
PUBLIC_PATHS = frozenset({"/healthz"}) | fleet.PUBLIC
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ApiConfigError(Exception):
    """The endpoint cannot start safely with these settings."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name or address is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback bind without a token (raises :class:`ApiConfigError`)."""
    if not is_loopback(settings.kg_api_host) and not settings.kg_api_token.get_secret_value():
        raise ApiConfigError(
            f"KG_API_TOKEN: required when KG_API_HOST={settings.kg_api_host} is not loopback "
            "(set a token, bind to 127.0.0.1, or turn the endpoint off with KG_API_ENABLED=false)"
        )


@dataclass
class ApiHandle:
    """A running endpoint; ``port`` is the bound one (useful with ``KG_API_PORT=0``)."""

    runner: web.AppRunner
    host: str
    port: int
    exporter: MetricsExporter
    _cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()
        for cleanup in reversed(self._cleanups):
            try:
                await cleanup()
            except Exception as exc:  # closing must go on
                log.debug("api cleanup failed: %s", exc)


class _State:
    """What the handlers share; one per endpoint."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        exporter: MetricsExporter,
        node: NodeContext | None,
        engine_factory: Callable[[], AsyncEngine],
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.exporter = exporter
        self.node = node
        self.token = settings.kg_api_token.get_secret_value().encode()
        self._engine_factory = engine_factory
        self._engine: AsyncEngine | None = None
        self._driver: AsyncDriver | None = None
        self.ready: tuple[float, list[StoreCheck]] | None = None
        self.ready_lock = asyncio.Lock()
        self.started = time.monotonic()

    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    async def dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    def driver(self) -> AsyncDriver:
        """A Neo4j driver of the endpoint's own, opened when the graph page first needs it."""
        if self._driver is None:
            from kgworker.store.graph import create_driver

            self._driver = create_driver(self.settings)
        return self._driver

    async def close_driver(self) -> None:
        if self._driver is not None:
            await self._driver.close()
            self._driver = None

    def authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token)


STATE: web.AppKey[_State] = web.AppKey("state", _State)


@web.middleware
async def _auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path not in PUBLIC_PATHS and not request.app[STATE].authorized(request):
        return web.json_response(
            {"error": "unauthorized"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="kgworker"'},
        )
    return await handler(request)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


async def _healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    uptime = round(time.monotonic() - state.started)
    body: dict[str, Any] = {"status": "ok", "uptime_seconds": uptime}
    if state.node is not None:
        body["node"] = state.node.node
        body["stopping"] = state.node.stopping.is_set()
    return web.json_response(body)


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    async with state.ready_lock:
        if state.ready is None or time.monotonic() - state.ready[0] > READY_CACHE_SECONDS:
            state.ready = (time.monotonic(), await check_stores(state.settings))
        checks = state.ready[1]
    stopping = state.node is not None and state.node.stopping.is_set()
    ok = all(c.ok for c in checks) and not stopping
    body = {
        "status": "ready" if ok else "not ready",
        "stopping": stopping,
        "checks": {
            c.store: {"ok": c.ok, "endpoint": c.endpoint, "version": c.version, "error": c.error}
            for c in checks
        },
    }
    return web.json_response(body, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[STATE].exporter.scrape()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def _status(request: web.Request) -> web.Response:
    from kgworker.observe.status import gather

    state = request.app[STATE]
    served = state.exporter.served()
    snapshot = await gather(
        state.settings,
        state.redis,
        state.engine(),
        node_name=state.settings.kg_worker_node_name,
        providers=served,
    )
    if state.node is not None:
        snapshot["runtime"] = state.node.metrics.snapshot()
    return web.json_response(snapshot, dumps=dumps)


async def _post_task(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return web.json_response({"error": "body is not JSON"}, status=400)
    try:
        task_id, provider = parse_task_request(body)
        result = await enqueue_task(state.redis, state.engine(), task_id, provider=provider)
    except ControlError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    log.info("task enqueued through the API", extra={"task_id": task_id})
    return web.json_response(result.as_dict(), status=202)


def build_app(state: _State) -> web.Application:
    app = web.Application(middlewares=[_auth], client_max_size=64 * 1024)
    app[STATE] = state
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    app.router.add_post("/tasks", _post_task)
    fleet.add_routes(app, state, dumps)
    return app


async def start_api(
    settings: Settings,
    *,
    node: NodeContext | None = None,
    redis: RedisClient | None = None,
    engine: AsyncEngine | None = None,
) -> ApiHandle:
    """Start the endpoint on ``KG_API_HOST:KG_API_PORT``; the caller closes the handle.

    ``node`` (the runtime's NodeContext) adds this node's counters and slots; without it
    the endpoint still serves fleet metrics, status and enqueue. Clients not passed in are
    created here and closed with the handle.
    """
    check_bind(settings)
    cleanups: list[Callable[[], Awaitable[None]]] = []
    if redis is None:
        redis = node.redis if node is not None else create_redis(settings)
        if node is None:
            cleanups.append(redis.aclose)

    def engine_factory() -> AsyncEngine:
        if engine is not None:
            return engine
        from kgworker.store.mysql import create_engine

        return create_engine(settings, pool_size=1, max_overflow=1)

    exporter = MetricsExporter(settings, redis, node=node)
    state = _State(settings, redis, exporter, node, engine_factory)
    exporter.engine = state.engine  # the backlog gauge reads MySQL with the endpoint's pool
    if engine is None:
        cleanups.append(state.dispose)
    cleanups.append(state.close_driver)
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.kg_api_host, settings.kg_api_port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        for cleanup in cleanups:
            await cleanup()
        raise
    port = settings.kg_api_port
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        port = int(sockets[0].getsockname()[1])
    cleanups.append(publish_endpoint(settings.kg_api_state_file, settings.kg_api_host, port))
    log.info("HTTP endpoint on %s:%s", settings.kg_api_host, port)
    return ApiHandle(runner, settings.kg_api_host, port, exporter, cleanups)


class HttpEndpoint:
    """The endpoint as the runtime's :class:`~kgworker.runtime.worker.Endpoint`: started
    with the node's context before the first claim, closed at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.handle: ApiHandle | None = None

    async def start(self, node: NodeContext) -> None:
        try:
            self.handle = await start_api(self.settings, node=node, redis=node.redis)
        except ApiConfigError as exc:
            raise EndpointRefused(f"HTTP endpoint refused: {exc}") from None
        except OSError as exc:
            raise EndpointRefused(
                f"HTTP endpoint: cannot listen on {self.settings.kg_api_host}:"
                f"{self.settings.kg_api_port} ({exc.strerror or exc}); set KG_API_PORT or "
                "KG_API_ENABLED"
            ) from None

    async def close(self) -> None:
        if self.handle is not None:
            await self.handle.close()
            self.handle = None
