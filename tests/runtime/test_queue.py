"""The Lua transitions on a real Redis: order, fencing, reaping, dead letters.

Each test that touches Redis runs on the single test Redis and on the Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio.cluster import RedisCluster

from kgworker.keys import ProviderKeys, queue_key
from kgworker.queue.connection import RedisClient
from kgworker.queue.provider_queue import MalformedItem, ProviderQueue, parse_item

from .conftest import Names

pytestmark = pytest.mark.redis_modes("single", "cluster")


def _queue(
    redis: RedisClient, names: Names, node: str = "n1", lease: float = 30.0
) -> ProviderQueue:
    return ProviderQueue(redis, names.alpha, node=node, lease_seconds=lease, max_stalls=1)


def test_keys_share_the_queue_slot() -> None:
    """Every per-provider key hashes with the chaishu queue (Cluster-safe scripts)."""
    from redis.crc import key_slot

    keys = ProviderKeys.for_provider("DeepSeek")
    assert keys.queue == queue_key("deepseek") == "kg:ai_queue:deepseek"
    slot = key_slot(keys.queue.encode())
    for name in ("active", "active_seen", "claims", "leases", "stalls", "dlq", "open"):
        assert key_slot(getattr(keys, name).encode()) == slot, name


async def test_claims_are_fifo_for_rpush(redis: RedisClient, names: Names) -> None:
    """Items RPUSHed by the producer are claimed oldest first, batched or blocking."""
    q = _queue(redis, names)
    await q.push(*({"task_id": i} for i in range(1, 8)))
    first = await q.claim(3)
    second = await q.claim(2)
    raw = await q.wait(0.1)
    assert raw is not None
    third = await q.claim_active(raw)
    assert third is not None
    rest = await q.claim(10)
    order = [json.loads(c.raw)["task_id"] for c in [*first, *second, third, *rest]]
    assert order == [1, 2, 3, 4, 5, 6, 7]
    assert await q.claim(1) == []
    assert await q.wait(0.05) is None


async def test_ack_is_fenced_after_the_lease_is_reaped(redis: RedisClient, names: Names) -> None:
    """A node whose lease expired cannot ack; the item is re-run by another node once."""
    old = _queue(redis, names, "old", lease=0.05)
    new = _queue(redis, names, "new")
    await old.push({"task_id": 1})
    [claim] = await old.claim(1)
    await asyncio.sleep(0.1)
    assert (await new.reap(active_grace_ms=1000)).requeued == 1
    [again] = await new.claim(1)
    assert again.raw == claim.raw and again.attempts == 1
    assert await old.ack(claim) is False
    assert await old.release(claim, count_attempt=False) == 0
    assert await old.dead_letter(claim, "x") is False
    assert await new.ack(again) is True
    assert await new.counts() == {"queued": 0, "active": 0, "claimed": 0, "dead": 0, "open": 0}


async def test_renew_reports_lost_claims(redis: RedisClient, names: Names) -> None:
    from kgworker.queue import scripts

    q = _queue(redis, names, lease=0.05)
    await q.push({"task_id": 1}, {"task_id": 2})
    a, b = await q.claim(2)
    await asyncio.sleep(0.1)
    await q.reap(active_grace_ms=1000)  # both expired: both back on the queue
    [x, y] = await q.claim(2)
    [lost] = await scripts.run_many(redis, [q.renew_call([a, b, x])])
    assert {v.decode() for v in lost} == {a.claim_id, b.claim_id}
    assert await q.ack(x) and await q.ack(y)


async def test_poison_item_is_dead_lettered_after_max_stalls(
    redis: RedisClient, names: Names
) -> None:
    q = _queue(redis, names, lease=0.01)  # max_stalls=1: the second stall dead-letters
    await q.push({"task_id": 9})
    for _ in range(2):
        await q.claim(1)
        await asyncio.sleep(0.03)
        await q.reap(active_grace_ms=1000)
    [entry] = await q.dead_letters()
    assert entry["reason"] == "stalled 2 times"
    assert json.loads(entry["raw"]) == {"task_id": 9}
    assert entry["provider"] == names.alpha and entry["node"] == "n1"
    assert (await q.counts())["queued"] == 0


async def test_stranded_active_item_is_swept_back(redis: RedisClient, names: Names) -> None:
    """An item left in active (node died between BLMOVE and claim) returns to the head."""
    q = _queue(redis, names)
    await q.push({"task_id": 1}, {"task_id": 2})
    raw = await q.wait(0.1)
    assert raw is not None
    assert (await q.reap(active_grace_ms=0)).rescued == 0  # first pass only marks it
    assert (await q.reap(active_grace_ms=0)).rescued == 1
    assert await q.claim_active(raw) is None  # the slow node must not work it
    order = [json.loads(c.raw)["task_id"] for c in await q.claim(5)]
    assert order == [1, 2]


@pytest.mark.redis_modes("cluster")
async def test_cluster_providers_are_on_different_masters(redis: RedisClient, names: Names) -> None:
    """Per the servers: a provider's keys share its queue's slot; the two queues' masters differ."""
    assert isinstance(redis, RedisCluster)
    owners: dict[int, str] = {}
    for (start, end), shard in (await redis.execute_command("CLUSTER SLOTS")).items():
        host, port = shard["primary"]
        for slot in range(start, end + 1):
            owners[slot] = f"{host}:{port}"
    masters = []
    for provider in (names.alpha, names.beta):
        k = ProviderKeys.for_provider(provider)
        keys = [k.queue, k.active, k.active_seen, k.claims, k.leases, k.stalls, k.dlq, k.open]
        slots = {await redis.cluster_keyslot(key) for key in keys}
        assert len(slots) == 1, (provider, slots)
        masters.append(owners[slots.pop()])
    assert masters[0] != masters[1], masters


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{nope", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"provider": "alpha"}', "no task_id"),
        (b'{"task_id": "7"}', "task_id is not an integer"),
        (b'{"task_id": true}', "task_id is not an integer"),
        (b'{"task_id": 0}', "task_id is not positive"),
        (b'{"task_id": 1, "provider": 5}', "provider is not a string"),
        (b'{"task_id": 1, "provider": "beta"}', "unknown provider"),
    ],
)
def test_malformed_items_are_named(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedItem, match=reason):
        parse_item(raw, "alpha")


def test_a_good_item_parses() -> None:
    assert parse_item(b'{"task_id": 3, "provider": "Alpha"}', "alpha")[0] == 3
