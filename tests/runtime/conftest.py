"""Helpers for the runtime tests: small leases, worker subprocesses, deadline polls."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kgworker.config import Settings, settings_to_env

ROOT = Path(__file__).resolve().parents[2]

#: Small intervals so that leases expire and reapers run within a test's patience.
FAST = {
    "kg_worker_providers": ["alpha", "beta"],
    "kg_lease_seconds": 1.5,
    "kg_reaper_interval": 0.2,
    "kg_heartbeat_interval": 1.0,
    "kg_claim_block_seconds": 0.3,
    "kg_retry_delay": 0.05,
    "kg_shutdown_grace": 2.0,
    "kg_max_stalls": 2,
}


@pytest.fixture
def rt_settings(settings: Settings) -> Settings:
    """The isolated test settings with fast runtime intervals."""
    return settings.model_copy(update=FAST)


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


class Workers:
    """Worker subprocesses started by one test; all are killed at teardown."""

    def __init__(self, settings: Settings, base_env: dict[str, str], logs: Path) -> None:
        self.settings = settings
        self.base_env = base_env
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, node: str, **env: Any) -> subprocess.Popen[bytes]:
        full = {**self.base_env, **settings_to_env(self.settings), "KG_WORKER_NODE_NAME": node}
        full.update({key.upper(): str(value) for key, value in env.items()})
        log = open(self.logs / f"{node}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.worker_app"],
            cwd=ROOT,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def workers(rt_settings: Settings, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    env = {k: v for k, v in worker_env.items() if not k.startswith("KG_")}
    pool = Workers(rt_settings, env, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for a subprocess to exit without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} still running after {timeout} s")
        await asyncio.sleep(0.02)
    return proc.returncode
