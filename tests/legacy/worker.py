"""The old chaishu worker node: ``python -m tests.legacy.worker``.

Like the old node, one process registers ``kg:nodes:{name}`` and forks one process per
worker slot, so every slot has an OS pid of its own for its ``kg:worker:{pid}`` key. The
node process also runs the old status reader and guard on a timer. Killing the process
group with SIGKILL loses whatever the slots had popped, as it did with the old code.

Environment: the REDIS_* / DB_* / NEO4J_* variables kgworker reads, and

- ``LEGACY_PROVIDERS`` comma list (empty: every active ``ai_providers`` row plus rules);
- ``LEGACY_NODE_NAME`` (default ``legacy-node``; a ``主节点-`` prefix makes readers probe
  the pids instead of the node key);
- ``LEGACY_WORKERS_PER_PROVIDER`` (default 1);
- ``LEGACY_CHAPTER_DELAY`` seconds of fake extraction per chapter (default 0.2);
- ``LEGACY_NODE_TTL`` seconds of the node key (default 180; refreshed every third of it,
  at most every 60 s);
- ``LEGACY_GUARD_INTERVAL`` seconds between guard passes (default 600, about what the old
  defaults gave; 0 or less disables the guard);
- ``LEGACY_WRITE_GRAPH`` (1/true: write a Chapter and a Character node per chapter);
- ``LEGACY_PROGRESS_CHANNEL`` (publish progress messages there when set).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neo4j import AsyncDriver, AsyncGraphDatabase
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings, load_settings
from kgworker.queue.connection import create_redis
from kgworker.store.mysql import create_engine

from .codec import RULES, encode_fields, local_iso, node_key
from .guard import guard_once
from .slot import Slot

log = logging.getLogger("legacy.node")
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LegacyConfig:
    node_name: str = "legacy-node"
    providers: tuple[str, ...] = ()
    workers_per_provider: int = 1
    chapter_delay: float = 0.2
    node_ttl: int = 180
    guard_interval: float = 600.0
    write_graph: bool = False
    progress_channel: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LegacyConfig:
        def get(name: str, default: str) -> str:
            return environ.get(name, "").strip() or default

        providers = tuple(p.strip() for p in get("LEGACY_PROVIDERS", "").split(",") if p.strip())
        return cls(
            node_name=get("LEGACY_NODE_NAME", cls.node_name),
            providers=providers,
            workers_per_provider=max(1, int(get("LEGACY_WORKERS_PER_PROVIDER", "1"))),
            chapter_delay=max(0.0, float(get("LEGACY_CHAPTER_DELAY", "0.2"))),
            node_ttl=max(1, int(get("LEGACY_NODE_TTL", "180"))),
            guard_interval=float(get("LEGACY_GUARD_INTERVAL", "600")),
            write_graph=get("LEGACY_WRITE_GRAPH", "0").lower() in ("1", "true", "yes"),
            progress_channel=environ.get("LEGACY_PROGRESS_CHANNEL") or None,
        )

    @property
    def beat(self) -> float:
        """Refresh period of the registry keys: well inside the node key's TTL."""
        return max(0.2, min(60.0, self.node_ttl / 3))


def _driver(settings: Settings) -> AsyncDriver:
    auth = (settings.neo4j_user, settings.neo4j_password.get_secret_value())
    return AsyncGraphDatabase.driver(settings.neo4j_uri, auth=auth)


async def _active_providers(settings: Settings) -> tuple[str, ...]:
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT name FROM ai_providers WHERE is_active = 1 ORDER BY id"))
            return (*(str(name) for (name,) in rows), RULES)
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------- slot --
def _die_with_parent(parent: int) -> None:
    """A slot must not outlive its node (the old slots were the node's children)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


async def run_slot(config: LegacyConfig, settings: Settings, provider: str) -> None:
    """One slot until SIGTERM; its key is removed on the way out, its task is not."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    redis = create_redis(settings)
    engine = create_engine(settings, pool_size=1, max_overflow=2)
    driver = _driver(settings) if config.write_graph else None
    slot = Slot(
        provider=provider, node_name=config.node_name, engine=engine, redis=redis,
        driver=driver, chapter_delay=config.chapter_delay, beat=config.beat,
        progress_channel=config.progress_channel, graph_database=settings.neo4j_database,
    )
    beat: asyncio.Task[None] | None = None
    try:
        await slot.heartbeat()
        log.info("slot %d serves %s", slot.pid, provider)
        beat = asyncio.create_task(slot.heartbeat_forever())
        await slot.serve()
    except asyncio.CancelledError:
        log.info("slot %d stopping", slot.pid)
    finally:
        if beat is not None:
            beat.cancel()
        with contextlib.suppress(Exception):
            await redis.delete(slot.key)
        await redis.aclose()
        await engine.dispose()
        if driver is not None:
            await driver.close()


# ------------------------------------------------------------------------- node --
class Node:
    """The node process: registry key, child reaping, and the guard timer."""

    def __init__(self, config: LegacyConfig, settings: Settings, children: list[int]) -> None:
        self.config = config
        self.settings = settings
        self.children = children
        self.pid = os.getpid()
        self.started_at = local_iso()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        redis = create_redis(self.settings)
        engine = create_engine(self.settings, pool_size=1, max_overflow=2)
        interval = self.config.guard_interval
        next_guard = time.monotonic() + interval
        try:
            while not self.stop.is_set():
                try:
                    await self._register(redis)
                except (RedisError, OSError) as exc:
                    log.warning("node heartbeat failed: %s", exc)
                self._reap()
                if interval > 0 and time.monotonic() >= next_guard:
                    next_guard = time.monotonic() + interval
                    await self._guard(engine, redis)
                wait = self.config.beat
                if interval > 0:
                    wait = max(0.05, min(wait, next_guard - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), wait)
        finally:
            await self._stop_children()
            with contextlib.suppress(Exception):
                await redis.delete(node_key(self.config.node_name))
            await redis.aclose()
            await engine.dispose()

    async def _register(self, redis: Any) -> None:
        fields = {
            "node_id": self.config.node_name, "node_type": "worker",
            "workers_per_provider": self.config.workers_per_provider, "pid": self.pid,
            "started_at": self.started_at, "last_heartbeat": local_iso(),
        }
        key = node_key(self.config.node_name)
        await redis.hset(key, mapping=encode_fields(fields))
        await redis.expire(key, self.config.node_ttl)

    async def _guard(self, engine: AsyncEngine, redis: Any) -> None:
        try:
            result = await guard_once(engine, redis)
        except Exception:
            log.exception("guard pass failed")
            return
        log.info("guard: completed=%s failed=%s reset=%s dropped=%s requeued=%s deleted=%s",
                 result.completed, result.failed, result.reset, result.dropped_workers,
                 result.requeued, result.status.deleted)

    def _reap(self, *, stopping: bool = False) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
                log.log(logging.INFO if stopping else logging.WARNING, "slot %d exited (%s)",
                        pid, os.waitstatus_to_exitcode(status))
            self.children.remove(pid)

    async def _stop_children(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.children and time.monotonic() < deadline:
            self._reap(stopping=True)
            await asyncio.sleep(0.05)
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s legacy[%(process)d] %(levelname)s %(message)s",
    )
    config = LegacyConfig.from_env(os.environ)
    settings = load_settings(environ=os.environ, dotenv_path=None)
    providers = config.providers or asyncio.run(_active_providers(settings))
    parent = os.getpid()
    children: list[int] = []
    for provider in providers:
        for _ in range(config.workers_per_provider):
            pid = os.fork()
            if pid == 0:  # the slot process: never returns into the node's code
                code = 0
                try:
                    _die_with_parent(parent)
                    asyncio.run(run_slot(config, settings, provider))
                except BaseException:
                    log.exception("slot crashed")
                    code = 1
                finally:
                    logging.shutdown()
                    os._exit(code)
            children.append(pid)
    log.info("node %s up: pid %d, slots %s", config.node_name, parent, children)
    asyncio.run(Node(config, settings, children).run())


if __name__ == "__main__":
    main()
