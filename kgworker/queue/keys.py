"""Every Redis key name the worker uses, in one place (the table is ``docs/redis-keys.md``).

The chaishu queue ``kg:ai_queue:{provider}`` has no hash tag and cannot change, so our own
per-provider keys use the queue's full name as their hash tag: ``{kg:ai_queue:P}:claims``
hashes to the same Cluster slot as ``kg:ai_queue:P``, which lets one Lua script touch the
queue and all of its state atomically. Fleet-wide keys live under ``kgw:``.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_PREFIX = "kg:ai_queue:"
NODE_PREFIX = "kg:nodes:"
WORKER_PREFIX = "kg:worker:"
SUSPEND_PREFIX = "ai:provider:suspend:"
FLEET_PREFIX = "kgw:"

#: Hash provider → slot count that overrides the configured per-provider limit, live.
PROVIDER_SLOTS_KEY = FLEET_PREFIX + "provider_slots"


def queue_key(provider: str) -> str:
    """The chaishu queue of ``provider`` (lower-cased, as the producer writes it)."""
    return QUEUE_PREFIX + provider.lower()


def node_key(node_name: str) -> str:
    return NODE_PREFIX + node_name


def worker_key(worker_id: str) -> str:
    return WORKER_PREFIX + worker_id


def suspend_key(provider: str) -> str:
    """Exists while the breaker or the main app has paused ``provider``."""
    return SUSPEND_PREFIX + provider


def reaper_lock_key(provider: str) -> str:
    """One reaper lock per provider, so a provider is swept by some node that serves it."""
    return f"{FLEET_PREFIX}lock:reaper:{provider.lower()}"


@dataclass(frozen=True, slots=True)
class ProviderKeys:
    """The queue of one provider and every key of ours in its Cluster slot."""

    provider: str
    queue: str
    active: str  #: list: BLMOVE destination, an item lives here only until claim.lua
    active_seen: str  #: hash raw → ms first seen in active by the reaper (mark/sweep)
    claims: str  #: hash claim id → JSON {raw, token, node, claimed_at}
    leases: str  #: zset claim id → lease expiry (ms, Redis server clock)
    stalls: str  #: hash sha1(raw) → stalls and failed attempts
    dlq: str  #: list of JSON {raw, reason, node, provider, at}
    open: str  #: hash claim id → JSON {raw, node, task_id}: jobs open to the fleet

    @classmethod
    def for_provider(cls, provider: str) -> ProviderKeys:
        name = provider.lower()
        queue = queue_key(name)
        tag = "{" + queue + "}:"
        return cls(
            provider=name,
            queue=queue,
            active=tag + "active",
            active_seen=tag + "active_seen",
            claims=tag + "claims",
            leases=tag + "leases",
            stalls=tag + "stalls",
            dlq=tag + "dlq",
            open=tag + "open",
        )
