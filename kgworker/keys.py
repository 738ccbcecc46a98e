"""Every Redis key and channel name kgworker reads or writes, in one place.

Why one module: the chaishu application reads some of these keys (the queues, the node
registry, the breaker), so their spelling is a contract; the rest are ours and must never
collide with chaishu's. Nothing else in the package spells a key: callers ask here.
``docs/redis-keys.md`` is generated from :data:`KEY_SPECS` (``scripts/sync-docs``), and a
test checks that every key a run leaves behind matches one of them.

Hash tags: the chaishu queue ``kg:ai_queue:{provider}`` has no tag and cannot get one, so
our per-provider queue state uses the queue's full name as its tag:
``{kg:ai_queue:P}:claims`` hashes to the same Cluster slot as ``kg:ai_queue:P``, which lets
one Lua script move an item between the queue and its state atomically. The LLM flow
control of a provider shares the tag ``{kgw:llm:P}`` for the same reason. Fleet-wide keys
live under ``kgw:`` in any slot and are never combined with others in one script.

This module imports nothing of kgworker: every layer may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

# --- chaishu's names (docs/chaishu-compat.md) --------------------------------------------
QUEUE_PREFIX = "kg:ai_queue:"
NODE_PREFIX = "kg:nodes:"
WORKER_PREFIX = "kg:worker:"
#: Field of a ``kg:worker`` entry that shows a task this node holds, not a slot.
HELD_FIELD = "kgw_held"
SUSPEND_PREFIX = "ai:provider:suspend:"
FAIL_PREFIX = "ai:provider:fail:"
#: Default pub/sub channel of the progress events (``KG_PROGRESS_CHANNEL``).
PROGRESS_CHANNEL = "kg:task_progress"

# --- ours ----------------------------------------------------------------------------------
FLEET_PREFIX = "kgw:"
#: Hash provider → slot count (or ``auto``) that overrides the configured limit, live.
PROVIDER_SLOTS_KEY = FLEET_PREFIX + "provider_slots"
#: Hash provider → ``on``: its waiting items may move to its backups while suspended.
FALLBACK_KEY = FLEET_PREFIX + "provider_fallback"
#: Counter behind the fleet-unique numbers of ``kg:worker:{N}`` entries (chaishu reads N
#: as a pid, so it must be an integer, and unique across every container of the fleet).
WORKER_SEQ_KEY = FLEET_PREFIX + "worker_seq"
#: Zset owner (node name + run id) → ms of its last beat: which node runs are alive.
LIVENESS_KEY = FLEET_PREFIX + "liveness"
#: When (ms) it was set, once; when it is gone (with the registry and the leases), Redis
#: came back without its data, and every node rebuilds what it keeps there at once.
EPOCH_KEY = FLEET_PREFIX + "epoch"
#: The lock of the fleet duties (auto-retry, recovery, fallback moves): one node at a time.
DUTIES_LOCK_KEY = FLEET_PREFIX + "lock:pipeline-duties"


def queue_key(provider: str) -> str:
    """The chaishu queue of ``provider`` (lower-cased, as the producer builds it)."""
    return QUEUE_PREFIX + provider.lower()


def node_key(node_name: str) -> str:
    """``kg:nodes:{node}``: the node's registry hash the chaishu web tab reads."""
    return NODE_PREFIX + node_name


def worker_key(worker_id: str) -> str:
    """``kg:worker:{id}``: one slot's registry hash."""
    return WORKER_PREFIX + worker_id


def kgw_node_key(node_name: str) -> str:
    """``kgw:node:{node}``: what kgworker keeps about a node beyond chaishu's fields."""
    return f"{FLEET_PREFIX}node:{node_name}"


def suspend_key(provider: str) -> str:
    """Exists while the breaker, the main app or an operator has paused ``provider``."""
    return SUSPEND_PREFIX + provider


def fail_key(provider: str) -> str:
    """chaishu's breaker counter: consecutive failed calls of ``provider``."""
    return FAIL_PREFIX + provider


def reaper_lock_key(provider: str) -> str:
    """One reaper lock per provider, so a provider is swept by some node that serves it."""
    return f"{FLEET_PREFIX}lock:reaper:{provider.lower()}"


@dataclass(frozen=True, slots=True)
class ProviderKeys:
    """The queue of one provider and every key of ours in its Cluster slot."""

    provider: str
    queue: str
    active: str  #: list: BLMOVE destination, an item lives here only until claim_active.lua
    active_seen: str  #: hash raw → ms first seen in active by the reaper (mark/sweep)
    claims: str  #: hash claim id → JSON {raw, token, node, owner, claimed_at}
    leases: str  #: zset claim id → lease expiry (ms, Redis server clock)
    stalls: str  #: hash sha1(raw) → stalls and failed attempts
    dlq: str  #: list of JSON {raw, reason, node, provider, at}
    open: str  #: hash claim id → JSON {raw, node, task_id, attempts}: jobs open to the fleet

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


@dataclass(frozen=True, slots=True)
class LlmKeys:
    """Flow control of one provider: rate windows, cool-down, adaptive permits (one slot)."""

    rpm: str  #: zset request id → admission ms (sliding window)
    tpm: str  #: zset "id|tokens" → admission ms
    cooldown: str  #: string: ms epoch until which the provider is cooling down after a 429
    permits: str  #: zset permit id → lease end ms: LLM requests in flight, fleet-wide
    aimd: str  #: hash: the adaptive controller's state
    aimd_stats: str  #: hash: the current period's figures, added by every node
    aimd_history: str  #: list: the last target changes, newest first
    aimd_lock: str  #: string: token of the node stepping the controller

    @classmethod
    def for_provider(cls, provider: str) -> LlmKeys:
        tag = "{" + f"{FLEET_PREFIX}llm:{provider.lower()}" + "}:"
        return cls(
            rpm=tag + "rpm",
            tpm=tag + "tpm",
            cooldown=tag + "cooldown",
            permits=tag + "permits",
            aimd=tag + "aimd",
            aimd_stats=tag + "aimd:stats",
            aimd_history=tag + "aimd:history",
            aimd_lock=tag + "aimd:lock",
        )


# --- the documented table ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key family: its pattern (``<P>`` provider, ``<node>``, ``<id>`` any), type,
    owner and content, as ``docs/redis-keys.md`` shows it."""

    pattern: str
    type: str
    group: str
    writer: str
    content: str

    @property
    def regex(self) -> re.Pattern[str]:
        return _pattern_regex(self.pattern)


@cache
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(<[A-Za-z ]+>)", pattern)
    body = "".join(".+" if p.startswith("<") and p.endswith(">") else re.escape(p)
                   for p in parts)
    return re.compile(f"^{body}$")


CHAISHU = "chaishu's (docs/chaishu-compat.md §2)"
QUEUE = "per provider queue state (tag `{kg:ai_queue:<P>}`)"
LLM = "per provider flow control (tag `{kgw:llm:<P>}`)"
FLEET = "fleet-wide (`kgw:`)"

KEY_SPECS: tuple[KeySpec, ...] = (
    KeySpec(QUEUE_PREFIX + "<P>", "list", CHAISHU,
            "chaishu producer (RPUSH); `reap.lua`, `release.lua` (LPUSH back to the head)",
            '`{"task_id": <int>, "provider": "<name>"}`; consumed from the left (FIFO)'),
    KeySpec(NODE_PREFIX + "<node>", "hash, TTL 180 s", CHAISHU, "runtime registry",
            "JSON-encoded: node_id, node_type `\"worker\"`, workers_per_provider, pid, "
            "started_at, last_heartbeat (naive chaishu-local ISO, no offset)"),
    KeySpec(WORKER_PREFIX + "<N>", "hash, TTL 170 s", CHAISHU, "runtime registry",
            "JSON-encoded: provider, pid (= N, an integer unique in the fleet), node_name, "
            "last_heartbeat (epoch s); task_id and start_time while it shows a task (a busy "
            "slot's chapter, or a task the node holds); deleted on stop"),
    KeySpec(SUSPEND_PREFIX + "<P>", "string", CHAISHU, "breaker, main app, `provider pause`",
            '`{"until": <epoch s>}`; the key existing pauses the provider'),
    KeySpec(FAIL_PREFIX + "<P>", "int, TTL 24 h", CHAISHU, "breaker (`breaker_fail.lua`)",
            "consecutive failed calls; a success deletes it"),
    KeySpec(PROGRESS_CHANNEL, "pub/sub channel", CHAISHU, "pipeline",
            "`kg_task_progress` events (name set by `KG_PROGRESS_CHANNEL`)"),
    KeySpec("{" + QUEUE_PREFIX + "<P>}:active", "list", QUEUE, "`BLMOVE` (RIGHT)",
            "items between a blocking claim and `claim_active.lua` (milliseconds)"),
    KeySpec("{" + QUEUE_PREFIX + "<P>}:active_seen", "hash", QUEUE, "`reap.lua`",
            "raw item → ms first seen in `active`; seen again after the grace → swept back "
            "to the queue head (a node died between BLMOVE and the claim)"),
    KeySpec("{" + QUEUE_PREFIX + "<P>}:claims", "hash", QUEUE,
            "`claim.lua`, `claim_active.lua`",
            "claim id → JSON `{raw, token, node, owner, claimed_at}` (ms; owner = node name + "
            "run id, \"\" = judged by the lease alone); removed by "
            "ack/release/dead-letter/reap"),
    KeySpec("{" + QUEUE_PREFIX + "<P>}:leases", "zset", QUEUE, "claim scripts, `renew.lua`",
            "claim id → lease expiry in ms of the Redis server's clock (`TIME`)"),
    KeySpec("{" + QUEUE_PREFIX + "<P>}:stalls", "hash", QUEUE,
            "`reap.lua`, `release.lua`",
            "sha1(raw) → stalls and failed attempts of that item; deleted on ack"),
    KeySpec("{" + QUEUE_PREFIX + "<P>}:dlq", "list", QUEUE,
            "`dead_letter.lua`, `reap.lua`, `release.lua`",
            "JSON `{raw, reason, node, provider, at}`; `raw_encoding: \"base64\"` when the "
            "bytes were not UTF-8"),
    KeySpec("{" + QUEUE_PREFIX + "<P>}:open", "hash", QUEUE, "`open.lua`",
            "claim id → JSON `{raw, node, task_id, attempts}`: jobs whose units every node "
            "may claim"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:rpm", "zset", LLM,
            "`rate_acquire.lua`, `rate_reseed.lua`",
            "request id → admission ms: the sliding RPM window shared by every node"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:tpm", "zset", LLM,
            "`rate_acquire.lua`, `rate_reconcile.lua`, `rate_reseed.lua`",
            "`id\\|tokens` → admission ms: the sliding TPM window"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:cooldown", "string, PX", LLM,
            "`rate_cooldown.lua`, `rate_reseed.lua`",
            "ms epoch until which the provider cools down after a 429"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:permits", "zset", LLM,
            "`permit_acquire.lua`, `permit_renew.lua`",
            "permit id → lease end ms: one per LLM request in flight, fleet-wide; a dead "
            "node's permits expire by themselves"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:aimd", "hash", LLM, "adaptive controller",
            "`target`, `reason`, `kind`, `changed_at`, `changes`, `latencies`, `ceiling`, "
            "`hold`, `since_change`, `avg_tokens`, `in_flight`; `cut_from`/`cut_until` while "
            "a 429 cut waits to be recorded"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:aimd:stats", "hash", LLM, "`permit_release.lua`",
            "the period's figures: `ok`, `throttled`, `timeouts`, `errors`, "
            "`latency_ms_sum`, `tokens`, `denied`, `peak`; read and deleted each period"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:aimd:history", "list", LLM, "adaptive controller",
            "JSON `{at, old, new, kind, reason}`, newest first, last 50 changes"),
    KeySpec("{" + FLEET_PREFIX + "llm:<P>}:aimd:lock", "string, PX", LLM, "`lock.lua`",
            "token of the node stepping the controller (TTL 3 periods)"),
    KeySpec(FLEET_PREFIX + "lock:reaper:<P>", "string, PX", FLEET, "`lock.lua`",
            "token `{owner}/{random}` of the node reaping provider P (TTL 3 reaper intervals "
            "+ 1 s; taken over at once when the owner's beats say it is dead)"),
    KeySpec(DUTIES_LOCK_KEY, "string, PX", FLEET, "`lock.lua`",
            "token of the node running the fleet duties (TTL 3 duty intervals)"),
    KeySpec(LIVENESS_KEY, "zset", FLEET, "`liveness_beat.lua` (every second)",
            "owner (node name + run id) → ms of its last beat, server clock; 0 after a clean "
            "stop: a silent owner's chapter and queue claims are returned at once, a live "
            "one's only past their leases; read by `liveness_read.lua`"),
    KeySpec(EPOCH_KEY, "string", FLEET, "runtime registry (SET NX)",
            "ms epoch of when it was set, once: its disappearance tells the nodes that Redis "
            "lost its data, and they reconcile the queues from MySQL at once"),
    KeySpec(WORKER_SEQ_KEY, "int", FLEET, "runtime registry (INCRBY)",
            "the last `kg:worker:<N>` number given out"),
    KeySpec(FLEET_PREFIX + "node:<node>", "hash, TTL 180 s", FLEET, "runtime registry",
            "JSON-encoded: providers, max_total, run_id, version, entries (its `kg:worker` "
            "numbers); marks the node as a kgworker node"),
    KeySpec(PROVIDER_SLOTS_KEY, "hash", FLEET, "`provider scale`",
            "provider → slots per node, read live every second; `auto` = adaptive"),
    KeySpec(FALLBACK_KEY, "hash", FLEET, "`provider fallback`",
            "provider → `on`: while suspended, its waiting items move to its backups"),
)


def spec_for(key: str) -> KeySpec | None:
    """The documented family ``key`` belongs to, or None (an undocumented key)."""
    for spec in KEY_SPECS:
        if spec.regex.match(key):
            return spec
    return None


def render_markdown() -> str:
    """The key tables of ``docs/redis-keys.md``, one per group."""
    lines: list[str] = []
    for group in dict.fromkeys(spec.group for spec in KEY_SPECS):
        lines += [f"### {group}", "", "| key | type | written by | content |",
                  "|---|---|---|---|"]
        for spec in (s for s in KEY_SPECS if s.group == group):
            lines.append(f"| `{spec.pattern}` | {spec.type} | {spec.writer} | {spec.content} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
