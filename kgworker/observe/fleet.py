"""What Redis says about the fleet: nodes, slots, provider queues, pauses and rate usage.

Shared by ``kgworker status``, ``/status`` and ``/metrics`` so the three never disagree.
Reads only, with one pipeline per group of keys; providers are discovered from the queue
keys themselves (``kg:ai_queue:*``), so a queue nobody serves still shows up — which is the
case an operator most needs to see.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from kgworker.config import Settings
from kgworker.config.specs import parse_limits
from kgworker.keys import (
    HELD_FIELD,
    NODE_PREFIX,
    PROVIDER_SLOTS_KEY,
    QUEUE_PREFIX,
    WORKER_PREFIX,
    LlmKeys,
    ProviderKeys,
    fail_key,
    kgw_node_key,
    suspend_key,
)
from kgworker.queue.connection import RedisClient

SCAN_LIMIT = 10_000  #: keys looked at per pattern; a fleet has far fewer


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_field(value: Any) -> Any:
    """chaishu JSON-encodes every hash field; accept plain strings too."""
    text = _text(value)
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class NodeInfo:
    name: str
    fields: dict[str, Any]
    ttl: int
    slots: int = 0
    busy: int = 0
    providers: dict[str, int] = field(default_factory=dict)

    @property
    def last_heartbeat(self) -> str:
        return str(self.fields.get("last_heartbeat", ""))


@dataclass
class ProviderState:
    provider: str
    queued: int = 0
    active: int = 0
    claimed: int = 0
    dead: int = 0
    open: int = 0
    suspended_until: float | None = None
    consecutive_failures: int = 0
    slot_override: int | None = None
    live_slots: int = 0
    busy_slots: int = 0
    requests_used: int = 0
    tokens_used: int = 0
    rpm_limit: int = 0
    tpm_limit: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _scan(redis: RedisClient, pattern: str) -> list[str]:
    found: list[str] = []
    async for key in redis.scan_iter(match=pattern, count=500):
        found.append(_text(key))
        if len(found) >= SCAN_LIMIT:
            break
    return found


async def discover_providers(redis: RedisClient, extra: Iterable[str] = ()) -> list[str]:
    """Providers with a queue key, a DLQ, a pause or a configured slot count, plus ``extra``."""
    names = {p.lower() for p in extra}
    for key in await _scan(redis, QUEUE_PREFIX + "*"):
        names.add(key[len(QUEUE_PREFIX) :])
    for key in await _scan(redis, "{" + QUEUE_PREFIX + "*}:dlq"):
        names.add(key[len(QUEUE_PREFIX) + 1 : -len("}:dlq")])
    for key in await _scan(redis, suspend_key("*")):
        names.add(key[len(suspend_key("")) :].lower())
    names.update(_text(k).lower() for k in await redis.hkeys(PROVIDER_SLOTS_KEY))
    return sorted(n for n in names if n)


async def read_nodes(redis: RedisClient) -> list[NodeInfo]:
    """``kg:nodes:*`` with their slots (``kg:worker:*``) counted per node and provider."""
    node_keys = await _scan(redis, NODE_PREFIX + "*")
    worker_keys = await _scan(redis, WORKER_PREFIX + "*")
    pipe = redis.pipeline(transaction=False)
    for key in node_keys:
        pipe.hgetall(key)
        pipe.ttl(key)
        pipe.hgetall(kgw_node_key(key[len(NODE_PREFIX) :]))
    for key in worker_keys:
        pipe.hgetall(key)
    results = await pipe.execute()
    nodes: dict[str, NodeInfo] = {}
    for i, key in enumerate(node_keys):
        raw, ttl, ours = results[3 * i : 3 * i + 3]
        fields = {_text(k): _json_field(v) for k, v in {**ours, **raw}.items()}
        name = key[len(NODE_PREFIX) :]
        nodes[name] = NodeInfo(name=name, fields=fields, ttl=int(ttl))
    for raw in results[3 * len(node_keys) :]:
        fields = {_text(k): _json_field(v) for k, v in raw.items()}
        node = nodes.get(str(fields.get("node_name", "")))
        if node is None or fields.get(HELD_FIELD):
            continue  # a held task's own entry is not a slot
        provider = str(fields.get("provider", "?"))
        node.slots += 1
        node.providers[provider] = node.providers.get(provider, 0) + 1
        if fields.get("task_id") not in (None, ""):
            node.busy += 1
    return sorted(nodes.values(), key=lambda n: n.name)


async def _slot_counts(redis: RedisClient) -> tuple[dict[str, int], dict[str, int]]:
    """Live and busy slots per provider over the whole fleet (``kg:worker:*``)."""
    live: dict[str, int] = {}
    busy: dict[str, int] = {}
    keys = await _scan(redis, WORKER_PREFIX + "*")
    if not keys:
        return live, busy
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, ["provider", "task_id", HELD_FIELD])
    for provider_raw, task_raw, held in await pipe.execute():
        if provider_raw is None or held is not None:
            continue  # gone meanwhile, or a held task's own entry (not a slot)
        provider = str(_json_field(provider_raw)).lower()
        live[provider] = live.get(provider, 0) + 1
        if task_raw is not None and _json_field(task_raw) not in (None, ""):
            busy[provider] = busy.get(provider, 0) + 1
    return live, busy


async def read_providers(
    redis: RedisClient, settings: Settings, providers: Iterable[str]
) -> list[ProviderState]:
    """Queue, claims, DLQ, pause, breaker, slots and rate-window usage per provider."""
    names = list(dict.fromkeys(p.lower() for p in providers))
    if not names:
        return []
    try:
        limits = parse_limits(settings.kg_provider_limits)
    except ValueError:
        limits = {}
    window_ms = int(settings.kg_rate_window_seconds * 1000)
    server_time = await redis.time()
    now_ms = int(server_time[0]) * 1000 + int(server_time[1]) // 1000
    overrides = {
        _text(k).lower(): int(v)
        for k, v in (await redis.hgetall(PROVIDER_SLOTS_KEY)).items()
        if _text(v).lstrip("-").isdigit()
    }
    live, busy = await _slot_counts(redis)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        k = ProviderKeys.for_provider(name)
        llm = LlmKeys.for_provider(name)
        pipe.llen(k.queue)
        pipe.llen(k.active)
        pipe.hlen(k.claims)
        pipe.llen(k.dlq)
        pipe.hlen(k.open)
        pipe.get(suspend_key(name))
        pipe.get(fail_key(name))
        pipe.zcount(llm.rpm, now_ms - window_ms, "+inf")
        pipe.zrangebyscore(llm.tpm, now_ms - window_ms, "+inf")
    results = await pipe.execute()
    states: list[ProviderState] = []
    for i, name in enumerate(names):
        queued, active, claimed, dead, open_, suspend, fails, reqs, tpm_members = results[
            9 * i : 9 * i + 9
        ]
        until: float | None = None
        if suspend is not None:
            payload = _json_field(suspend)
            until = float(payload.get("until", 0)) if isinstance(payload, dict) else 0.0
        tokens = 0
        for member in tpm_members:
            count = _text(member).rpartition("|")[2]
            tokens += int(count) if count.isdigit() else 0
        limit = limits.get(name) or limits.get("*")
        fail_value = _json_field(fails) if fails is not None else 0
        states.append(
            ProviderState(
                provider=name,
                queued=int(queued),
                active=int(active),
                claimed=int(claimed),
                dead=int(dead),
                open=int(open_),
                suspended_until=until,
                consecutive_failures=int(fail_value) if isinstance(fail_value, int) else 0,
                slot_override=overrides.get(name),
                live_slots=live.get(name, 0),
                busy_slots=busy.get(name, 0),
                requests_used=int(reqs),
                tokens_used=tokens,
                rpm_limit=limit.rpm if limit else 0,
                tpm_limit=limit.tpm if limit else 0,
            )
        )
    return states
