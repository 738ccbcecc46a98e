"""Redis high availability: Cluster-safe scripts and pipelines, and a Sentinel failover.

The static test reads every Lua transition; the Cluster tests run on the three-master
Cluster of ``scripts/services up-cluster``; the failover test kills the Sentinel set's
master (``scripts/services up-sentinel``) under a running worker. Both topologies are
found, or the tests skipped with the reason, by :mod:`tests.runtime.ha_servers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio.cluster import RedisCluster

from kgworker.config import Settings
from kgworker.control import dlq
from kgworker.keys import LlmKeys, ProviderKeys, fail_key, reaper_lock_key
from kgworker.observe import fleet
from kgworker.queue import scripts
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.queue.provider_queue import ProviderQueue
from kgworker.runtime.handler import Job, SimpleHandler
from kgworker.runtime.worker import WorkerNode

from .conftest import Names, wait_for
from .ha_servers import ROOT, SentinelSet, sentinel_set, sentinel_settings

LUA_DIR = ROOT / "kgworker" / "queue" / "lua"
#: Redis commands a script may call without a key as first argument.
KEYLESS = {"TIME"}


# --- every script touches only the keys it declares ------------------------------------
def _declared_keys(source: str) -> dict[int, str]:
    return {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r"^-- KEYS\[(\d+)\]\s+(\S+)", source, re.MULTILINE)
    }


@pytest.mark.parametrize("name", scripts.SCRIPT_NAMES)
def test_every_lua_script_documents_its_keys(name: str) -> None:
    """Headers name KEYS[1..n]; the body reaches Redis only through those keys.

    Cluster routes a script by the keys it is given, so a key built inside the script (or
    an undeclared one) would make it fail there or touch the wrong slot.
    """
    source = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    declared = _declared_keys(source)
    assert declared, f"{name}.lua: no KEYS header"
    assert sorted(declared) == list(range(1, len(declared) + 1)), declared
    code = "\n".join(line for line in source.splitlines() if not line.startswith("--"))
    used = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", code)}
    assert used == set(declared), f"{name}.lua uses KEYS {sorted(used)}, declares {declared}"
    for command, first in re.findall(r"redis\.call\('(\w+)'\s*(?:,\s*([^,)]+))?", code):
        if command.upper() not in KEYLESS:
            assert first.startswith("KEYS["), f"{name}.lua: {command} on {first!r}"
    table = (ROOT / "docs" / "redis-keys.md").read_text(encoding="utf-8")
    assert f"`{name}.lua`" in table, f"{name}.lua missing from docs/redis-keys.md"
    assert "redis-ha.md" in table


# --- Cluster ---------------------------------------------------------------------------
@dataclass
class _Spy:
    """Every (script, keys) the queue code sends, through ``run`` or ``run_many``."""

    calls: list[tuple[str, list[str]]] = field(default_factory=list)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    recorded = _Spy()
    run, run_many = scripts.run, scripts.run_many

    async def spy_run(client: RedisClient, name: str, keys: Sequence[str], args: Any) -> Any:
        recorded.calls.append((name, list(keys)))
        return await run(client, name, keys, args)

    async def spy_run_many(client: RedisClient, calls: Sequence[scripts.Call]) -> list[Any]:
        recorded.calls.extend((name, list(keys)) for name, keys, _ in calls)
        return await run_many(client, calls)

    monkeypatch.setattr(scripts, "run", spy_run)
    monkeypatch.setattr(scripts, "run_many", spy_run_many)
    return recorded


def _queue(redis: RedisClient, provider: str, lease: float = 30.0) -> ProviderQueue:
    return ProviderQueue(redis, provider, node="ha", lease_seconds=lease, max_stalls=1)


@pytest.mark.redis_modes("cluster")
async def test_every_script_call_hashes_to_one_slot_on_the_cluster(
    redis: RedisClient, names: Names, spy: _Spy
) -> None:
    """Each transition, as the runtime calls it, has keys of one slot (asked of the server)."""
    alpha, beta = _queue(redis, names.alpha, lease=0.05), _queue(redis, names.beta)
    await alpha.push({"task_id": 1}, {"task_id": 2}, {"task_id": 3})
    await beta.push({"task_id": 4}, {"task_id": 5})
    a1, _a2 = await alpha.claim(2)
    raw = await alpha.wait(0.1)
    assert raw is not None
    a3 = await alpha.claim_active(raw)
    assert a3 is not None
    assert await alpha.open(a1, 1)
    await asyncio.sleep(0.1)
    await alpha.reap(active_grace_ms=1000)  # all three expired: back on the queue
    [b1, b2] = await beta.claim(2)
    lost, _ = await scripts.run_many(redis, [alpha.renew_call([a1]), beta.renew_call([b1, b2])])
    assert [x.decode() for x in lost] == [a1.claim_id]
    assert await beta.release(b1, count_attempt=True) == 1
    assert await beta.dead_letter(b2, "bad")
    assert await scripts.run(redis, "lock", [reaper_lock_key(names.alpha)], ["t", 1000, "0"]) == 0
    [b3] = await beta.claim(1)
    assert (await scripts.run_many(redis, [beta.ack_call(b3)])) == [1]
    assert [d.fields["reason"] for d in await dlq.requeue(redis, names.beta, 0)] == ["bad"]
    llm = LlmKeys.for_provider(names.alpha)
    wait, _now = await scripts.run(redis, "rate_acquire", [llm.rpm, llm.tpm, llm.cooldown],
                                   [5, 100, 60_000, 10, "m1"])
    assert wait == 0
    await scripts.run(redis, "rate_restamp", [llm.rpm, llm.tpm], ["m1", "m1|10"])
    assert await scripts.run(redis, "rate_reconcile", [llm.tpm], ["m1|10", "m1|12"]) == 1
    await scripts.run(redis, "rate_cooldown", [llm.cooldown], [10])
    assert await scripts.run(redis, "rate_reseed", [llm.rpm, llm.tpm, llm.cooldown],
                             [5, 100, 60_000, 0, "m1", _now, 12]) == [0, 0]  # nothing lost
    assert await scripts.run(redis, "breaker_fail", [fail_key(names.alpha)], [60]) == 1
    assert await scripts.run(redis, "permit_acquire", [llm.permits, llm.aimd, llm.aimd_stats],
                             ["p1", 1000, 4]) == 1
    assert await scripts.run(redis, "permit_renew", [llm.permits], [5000, "p1"]) == 0  # held
    assert await scripts.run(redis, "permit_release", [llm.permits, llm.aimd_stats, llm.aimd],
                             ["p1", "ok", "1.0", 5, 4, 1, 0.85, 1000]) == 1
    held, _stats = await scripts.run(redis, "aimd_collect", [llm.permits, llm.aimd_stats], [])
    assert held == 0
    k = ProviderKeys.for_provider(names.beta)
    items = ["1", "4", '{"task_id": 4}', "77", '{"task_id": 77}']
    keys = [k.queue, k.active, k.claims, k.open]
    assert await scripts.run(redis, "reconcile", keys, items) == [b"4", b"77"]
    assert await scripts.run(redis, "reconcile", keys, items) == []  # queued now
    assert int(await scripts.run(redis, "liveness_beat", ["kgw:liveness"],
                                 [f"{names.node}-x", "1", 86_400_000])) > 0
    now, beat, never = await scripts.run(redis, "liveness_read", ["kgw:liveness"],
                                         [f"{names.node}-x", f"{names.node}-never"])
    assert now >= beat > 0 and never == -1
    assert {name for name, _ in spy.calls} == set(scripts.SCRIPT_NAMES)
    for name, keys in spy.calls:
        slots = {await redis.cluster_keyslot(key) for key in keys}  # type: ignore[union-attr]
        assert len(slots) == 1, (name, keys, slots)


@pytest.mark.redis_modes("cluster")
async def test_pipelined_scripts_reload_per_master_after_noscript(
    redis: RedisClient, names: Names
) -> None:
    """A master with an empty script cache (a promoted replica) is reloaded in one retry."""
    assert isinstance(redis, RedisCluster)
    alpha, beta = _queue(redis, names.alpha), _queue(redis, names.beta)
    await alpha.push({"task_id": 1})
    await beta.push({"task_id": 2})
    [a] = await alpha.claim(1)
    [b] = await beta.claim(1)
    master = redis.get_node_from_key(alpha.keys.queue)
    assert master is not None
    await redis.execute_command("SCRIPT FLUSH", target_nodes=master)
    sha = scripts.script("renew").sha
    assert await redis.execute_command("SCRIPT EXISTS", sha, target_nodes=master) == [False]
    assert await scripts.run_many(redis, [alpha.renew_call([a]), beta.renew_call([b])]) == [[], []]
    await redis.execute_command("SCRIPT FLUSH", target_nodes=master)
    assert await alpha.ack(a)  # the single-call path reloads too
    assert await scripts.run_many(redis, [beta.ack_call(b)]) == [1]


@pytest.mark.redis_modes("cluster")
async def test_blocking_claims_on_two_masters_do_not_share_a_connection(
    settings: Settings, names: Names
) -> None:
    """Two BLMOVEs block at once, each on its queue's master, while other commands flow."""
    block = 2.0
    client = create_redis(settings, socket_timeout=block + 10)  # as WorkerNode builds it
    try:
        alpha, beta = _queue(client, names.alpha), _queue(client, names.beta)
        started = time.monotonic()
        waits = [asyncio.create_task(q.wait(block)) for q in (alpha, beta)]
        await asyncio.sleep(0.2)
        pong = time.monotonic()
        await client.ping()
        await _queue(client, names.beta).push({"task_id": 9})
        assert time.monotonic() - pong < 0.5  # not queued behind a blocked connection
        assert await asyncio.wait_for(waits[1], 1.0) == b'{"task_id": 9}'
        assert time.monotonic() - started < 1.0  # beta woke at once, alpha still blocks
        assert await waits[0] is None
        assert time.monotonic() - started >= block - 0.1  # the full block, no timeout error
        assert (await beta.claim_active(b'{"task_id": 9}')) is not None
    finally:
        await client.aclose()


@pytest.mark.redis_modes("cluster")
async def test_fleet_views_and_dlq_tools_work_on_the_cluster(
    redis: RedisClient, names: Names, rt_settings: Settings
) -> None:
    """Status views (SCAN on every master, cross-slot pipelines) and DLQ tools on a Cluster."""
    alpha = _queue(redis, names.alpha)
    await alpha.push({"task_id": 1}, {"task_id": 2})
    for claim in await alpha.claim(2):
        await alpha.dead_letter(claim, "bad")
    found = await fleet.discover_providers(redis)
    assert names.alpha in found
    [state] = await fleet.read_providers(redis, rt_settings, [names.alpha])
    assert state.dead == 2
    assert len(await dlq.requeue(redis, names.alpha, 0)) == 1
    assert await dlq.purge(redis, names.alpha) == 1
    assert await alpha.counts() == {"queued": 1, "active": 0, "claimed": 0, "dead": 0, "open": 0}
    await fleet.read_nodes(redis)


# --- Sentinel failover -----------------------------------------------------------------
#: A duplicate is allowed only for an item whose first run was in flight at the kill or
#: acknowledged this shortly before it (an ack the master may not have replicated yet).
REPLICATION_WINDOW = 1.0
ITEMS = 300


@dataclass
class _Ledger:
    """What the handler did, in this process: it cannot be lost with a Redis master."""

    runs: list[tuple[int, float, float]] = field(default_factory=list)  # id, start, end
    done: set[int] = field(default_factory=set)
    executions: Counter[int] = field(default_factory=Counter)


def _master(found: SentinelSet) -> tuple[str, int]:
    for entry in found.sentinels:
        host, _, port = entry.rpartition(":")
        client = sync_redis.Redis(host=host, port=int(port), socket_timeout=1)
        try:
            addr = client.sentinel_get_master_addr_by_name(found.master)
        except (sync_redis.RedisError, OSError):
            continue
        finally:
            client.close()
        if addr:
            host_ = addr[0].decode() if isinstance(addr[0], bytes) else str(addr[0])
            return host_, int(addr[1])
    raise AssertionError("no sentinel names a master")


def _info(host: str, port: int, section: str) -> dict[str, Any]:
    client = sync_redis.Redis(host=host, port=port, socket_timeout=1)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def _replicated(host: str, port: int) -> bool:
    with contextlib.suppress(sync_redis.RedisError, OSError):
        info = _info(host, port, "replication")
        return info.get("connected_slaves", 0) >= 1 and "online" in str(info.get("slave0"))
    return False


def _server_pid(host: str, port: int) -> tuple[int, str]:
    """The master's pid (cross-checked with its ``.services`` pidfile) and config file."""
    info = _info(host, port, "server")
    pid, config = int(info["process_id"]), str(info.get("config_file", ""))
    pidfile = Path(config).parent / "redis.pid" if config else None
    if pidfile is not None and pidfile.exists():
        assert int(pidfile.read_text().strip()) == pid, (pidfile, pid)
    return pid, config


def _restart(config: str, found: SentinelSet, old: tuple[str, int]) -> None:
    """Bring the killed server back; the sentinels turn it into the new master's replica."""
    if config:
        subprocess.run(["redis-server", config], check=False, capture_output=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        new = _master(found)
        if new != old and _replicated(*new):
            return
        time.sleep(0.2)


async def test_sentinel_failover_under_a_running_worker(
    settings: Settings, record_property: Any
) -> None:
    """SIGKILL the master mid-run: the run completes, each item is done once in effect.

    Executions beyond one are allowed only where the failover itself can cause them (see
    docs/redis-ha.md): the item's first run started on the old master and was in flight
    at the kill, or was acknowledged within REPLICATION_WINDOW before it (an ack the dead
    master may not have passed on). The time to resume is measured, not asserted.
    """
    found = sentinel_set()
    old = _master(found)
    if not await asyncio.to_thread(_wait_replicated, old):
        pytest.skip(f"the sentinel master {old} has no replica in sync")
    run = uuid.uuid4().hex[:8]
    provider = f"ha-{run}"
    s = sentinel_settings(settings).model_copy(
        update={
            "kg_worker_providers": [provider],
            "kg_worker_node_name": f"kgt-{run}",
            "kg_workers_per_provider": 8,
            "kg_lease_seconds": 6.0,
            "kg_reaper_interval": 0.5,
            "kg_claim_block_seconds": 0.5,
            "kg_max_stalls": 5,
            "kg_shutdown_grace": 2.0,
        }
    )
    ledger = _Ledger()

    async def work(job: Job) -> None:
        started = time.monotonic()
        ledger.executions[job.task_id] += 1
        await asyncio.sleep(0.05)
        ledger.runs.append((job.task_id, started, time.monotonic()))
        ledger.done.add(job.task_id)  # idempotent: a set

    redis = create_redis(s)
    keys = ProviderKeys.for_provider(provider)
    config = ""
    killed = False
    try:
        queue = _queue(redis, provider)
        await queue.push(*({"task_id": i, "provider": provider} for i in range(1, ITEMS + 1)))
        assert await redis.execute_command("WAIT", 1, 2000) >= 1  # the items are on the replica
        node = WorkerNode(s, SimpleHandler(work))
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        try:
            await wait_for(lambda: _true(len(ledger.done) >= ITEMS // 3), 20, "a third done")
            pid, config = _server_pid(*old)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            killed = True
            switched = asyncio.create_task(asyncio.to_thread(_wait_switch, found, old))
            await wait_for(lambda: _true(len(ledger.done) == ITEMS), 60, "every item done")
            await wait_for(lambda: _settled(queue), s.kg_lease_seconds + 15, "queue settled")
        finally:
            stop.set()
            code = await asyncio.wait_for(task, 30)
        assert code == 0
        new, switched_at = await switched
        assert new != old
    finally:
        with contextlib.suppress(Exception):
            for key in (keys.queue, keys.active, keys.active_seen, keys.claims, keys.leases):
                await redis.delete(key)
            for key in (keys.stalls, keys.dlq, keys.open, reaper_lock_key(provider)):
                await redis.delete(key)
        await redis.aclose()
        if killed:
            await asyncio.to_thread(_restart, config, found, old)

    assert ledger.done == set(range(1, ITEMS + 1))
    first_run: dict[int, tuple[float, float]] = {}
    for task_id, begun, ended in ledger.runs:
        first_run.setdefault(task_id, (begun, ended))
    repeated = {t: n for t, n in ledger.executions.items() if n > 1}
    for task_id, count in repeated.items():
        begun, ended = first_run[task_id]
        assert count == 2, (task_id, count)
        assert begun < killed_at and ended > killed_at - REPLICATION_WINDOW, (task_id, begun)
    before = max(end for _, _, end in ledger.runs if end < killed_at)
    after = min(end for _, begun, end in ledger.runs if begun > killed_at)
    resume = after - before
    metrics = node.ctx.metrics
    record_property("resume_seconds", round(resume, 3))
    print(  # the measurement for docs/benchmarks.md (pytest -s)
        json.dumps(
            {
                "resume_seconds": round(resume, 3),
                "sentinel_switch_seconds": round(switched_at - killed_at, 3),
                "items": ITEMS,
                "executions": sum(ledger.executions.values()),
                "repeated": len(repeated),
                "lease_losses": metrics.total("lease_losses"),
                "stalls": metrics.total("stalls"),
                "old_master": f"{old[0]}:{old[1]}",
                "new_master": f"{new[0]}:{new[1]}",
            }
        )
    )


def _wait_switch(found: SentinelSet, old: tuple[str, int]) -> tuple[tuple[str, int], float]:
    """The new master and when the sentinels first named it (polled every 50 ms)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError):
            new = _master(found)
            if new != old:
                return new, time.monotonic()
        time.sleep(0.05)
    raise AssertionError("the sentinels never promoted a new master")


def _wait_replicated(master: tuple[str, int]) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _replicated(*master):
            return True
        time.sleep(0.2)
    return False


async def _settled(queue: ProviderQueue) -> bool:
    counts = await queue.counts()
    return counts == {"queued": 0, "active": 0, "claimed": 0, "dead": 0, "open": 0}


async def _true(value: bool) -> bool:
    return value
