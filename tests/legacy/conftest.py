"""Fixtures for running the old worker beside the isolated test stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.store.migrate import upgrade

from .data import seed_chaishu
from .process import LegacyProcess


@pytest.fixture
async def legacy_db(mysql_engine: AsyncEngine) -> AsyncEngine:
    """The test database with the schema, the usual providers and a default config."""
    await upgrade(mysql_engine)
    await seed_chaishu(mysql_engine)
    return mysql_engine


LaunchLegacy = Callable[..., Awaitable[LegacyProcess]]


@pytest.fixture
async def launch_legacy(
    worker_env: dict[str, str], redis: Any, tmp_path: Path
) -> AsyncIterator[LaunchLegacy]:
    """Start old worker nodes (``LegacyProcess`` options as keywords), ready to work;
    every one still running is stopped at teardown."""
    started: list[LegacyProcess] = []

    async def launch(**options: Any) -> LegacyProcess:
        log = tmp_path / f"legacy-{len(started)}.log"
        proc = LegacyProcess(worker_env, redis, log_path=log, **options)
        started.append(proc)
        proc.start()
        await proc.wait_ready()
        return proc

    try:
        yield launch
    finally:
        for proc in started:
            await proc.terminate()


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
