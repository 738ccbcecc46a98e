"""Helpers for the runtime tests: small leases, worker subprocesses, deadline polls.

Redis modes: a test module marked ``@pytest.mark.redis_modes("single", "cluster")`` runs
each test that uses ``settings`` once per mode (``[single]``, ``[cluster]``); unmarked
tests run on the single test Redis only. A Cluster has one database, shared with every
other test run, so there each test gets its own provider names, node name and test-key
prefix (:class:`Names`) and its keys are deleted afterwards. The HA servers are found by
:mod:`tests.runtime.ha_servers`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from kgworker.config import Settings, settings_to_env
from kgworker.keys import (
    PROVIDER_SLOTS_KEY,
    ProviderKeys,
    node_key,
    reaper_lock_key,
    suspend_key,
)
from kgworker.queue.connection import RedisClient

from .ha_servers import cluster_settings

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_modes(*modes): run each test in these Redis modes (single, cluster)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("redis_modes")
    if marker is not None and "redis_mode" in metafunc.fixturenames:
        metafunc.parametrize("redis_mode", list(marker.args))


@pytest.fixture
def redis_mode() -> str:
    """``single`` unless the test's ``redis_modes`` marker parametrizes it."""
    return "single"


@pytest.fixture
def settings(settings: Settings, redis_mode: str) -> Settings:
    """The isolated settings, pointed at the Redis Cluster in ``cluster`` mode."""
    if redis_mode == "cluster":
        return cluster_settings(settings)
    return settings


@dataclass(frozen=True)
class Names:
    """Provider names, node name and test-key prefix of one test."""

    alpha: str
    beta: str
    node: str
    tag: str  #: prefix of the keys a test handler writes itself

    def provider_keys(self) -> list[str]:
        keys: list[str] = []
        for provider in (self.alpha, self.beta):
            k = ProviderKeys.for_provider(provider)
            keys += [k.queue, k.active, k.active_seen, k.claims, k.leases, k.stalls, k.dlq]
            keys += [k.open, suspend_key(provider), reaper_lock_key(provider)]
        return keys


def _master_of(client: RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    assert node is not None
    return str(node.name)


@pytest.fixture
async def names(settings: Settings, redis_mode: str, redis: RedisClient) -> AsyncIterator[Names]:
    """``alpha``/``beta`` on a private Redis DB; unique names on the shared Cluster.

    On the Cluster the two providers' queues are chosen on different masters, so every
    test also exercises two nodes (``test_cluster_providers_are_on_different_masters``
    checks it with the servers' own CLUSTER KEYSLOT / CLUSTER SLOTS).
    """
    if redis_mode != "cluster":
        yield Names("alpha", "beta", settings.kg_worker_node_name, "kgt:")
        return
    assert isinstance(redis, RedisCluster)
    await redis.initialize()
    while True:
        run = uuid.uuid4().hex[:8]
        alpha, beta = f"alpha-{run}", f"beta-{run}"
        if _master_of(redis, ProviderKeys.for_provider(alpha).queue) != _master_of(
            redis, ProviderKeys.for_provider(beta).queue
        ):
            break
    names = Names(alpha, beta, f"kgt-{run}", f"kgt:{run}:")
    try:
        yield names
    finally:
        await _delete_test_keys(redis, names)


async def _delete_test_keys(redis: RedisCluster, names: Names) -> None:
    """Everything a test left on the shared Cluster: provider, node and test keys."""
    doomed = set(names.provider_keys()) | {node_key(names.node)}
    for pattern in (f"{names.tag}*", f"kg:worker:{names.node}*", f"kg:nodes:{names.node}*"):
        doomed.update([k.decode() async for k in redis.scan_iter(match=pattern, count=1000)])
    for key in doomed:  # one by one: the keys live in many slots
        await redis.delete(key)
    await redis.hdel(PROVIDER_SLOTS_KEY, names.alpha, names.beta)


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
def rt_settings(settings: Settings, names: Names) -> Settings:
    """The isolated test settings with fast runtime intervals."""
    providers = [names.alpha, names.beta]
    update = {**FAST, "kg_worker_providers": providers, "kg_worker_node_name": names.node}
    return settings.model_copy(update=update)


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
