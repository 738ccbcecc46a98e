"""Round-trip checks of the three stores, shared by ``kgworker doctor`` and ``/readyz``.

Each check opens its own short-lived client so a broken pool elsewhere cannot hide a
problem, and turns every failure into one readable reason instead of a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kgworker.config import Settings

CHECK_TIMEOUT = 8.0


@dataclass(frozen=True)
class StoreCheck:
    store: str
    endpoint: str
    ok: bool
    version: str = ""
    rtt_ms: float = 0.0
    error: str = ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:.0f} s"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _timed(probe: Callable[[], Awaitable[str]]) -> tuple[str, float]:
    """Run a probe that connects and returns a version; time one extra round trip."""
    version = await probe()
    start = time.perf_counter()
    await probe()
    return version, (time.perf_counter() - start) * 1000


async def check_redis(settings: Settings) -> str:
    from kgworker.queue.connection import create_redis

    client = create_redis(settings, socket_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
        info = await client.info("server")
        return str(info.get("redis_version", "?"))
    finally:
        await client.aclose()


async def check_mysql(settings: Settings) -> str:
    from sqlalchemy import text

    from kgworker.store.mysql import create_engine

    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            return str((await conn.execute(text("SELECT VERSION()"))).scalar_one())
    finally:
        await engine.dispose()


async def check_neo4j(settings: Settings) -> str:
    from kgworker.store.graph import create_driver

    driver = create_driver(settings, connection_timeout=CHECK_TIMEOUT)
    try:
        await driver.verify_connectivity()
        records, _, _ = await driver.execute_query(
            "CALL dbms.components() YIELD name, versions, edition "
            "RETURN versions[0] AS version, edition",
            database_=settings.neo4j_database,
        )
        row = records[0]
        return f"{row['version']} {row['edition']}"
    finally:
        await driver.close()


async def _run(store: str, endpoint: str, probe: Callable[[], Awaitable[str]]) -> StoreCheck:
    try:
        version, rtt = await asyncio.wait_for(_timed(probe), CHECK_TIMEOUT * 2)
    except Exception as exc:  # every failure becomes a reason, never a traceback
        return StoreCheck(store, endpoint, ok=False, error=_reason(exc))
    return StoreCheck(store, endpoint, ok=True, version=version, rtt_ms=rtt)


async def check_stores(settings: Settings) -> list[StoreCheck]:
    """Check Redis, MySQL and Neo4j concurrently."""
    endpoints = settings.endpoints()
    return list(
        await asyncio.gather(
            _run("redis", endpoints["redis"], lambda: check_redis(settings)),
            _run("mysql", endpoints["mysql"], lambda: check_mysql(settings)),
            _run("neo4j", endpoints["neo4j"], lambda: check_neo4j(settings)),
        )
    )
