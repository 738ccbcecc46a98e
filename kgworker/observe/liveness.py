"""Is a node alive? ``kgworker status --node NAME --check`` — like ``arq --check`` or
``celery inspect ping``, for a liveness probe, a cron job or a deploy script.

A node is alive when ``kg:nodes:<name>`` exists and was refreshed lately. How lately is
read from the key's TTL, not from its ``last_heartbeat`` field: the registry sets the TTL
to :data:`~kgworker.runtime.registry.NODE_TTL` on every heartbeat, so ``NODE_TTL - ttl``
is the heartbeat's age on the Redis server's clock — no clock skew between the node and
the host asking. A key without a TTL (written by something else) falls back to the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kgworker.domain.clock import CHAISHU_TZ
from kgworker.keys import kgw_node_key, node_key
from kgworker.queue.connection import RedisClient
from kgworker.runtime.registry import NODE_TTL


@dataclass(frozen=True)
class Liveness:
    alive: bool
    message: str
    age_seconds: float | None = None


def _field(raw: dict[Any, Any], name: str) -> Any:
    for key, value in raw.items():
        text = key.decode() if isinstance(key, bytes) else str(key)
        if text == name:
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            try:
                return json.loads(value)
            except (TypeError, ValueError):
                return value
    return None


def _age_from_field(value: Any) -> float | None:
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=CHAISHU_TZ)
    return max(0.0, (datetime.now(UTC) - stamp).total_seconds())


async def check_node(redis: RedisClient, name: str, max_age: float) -> Liveness:
    """Whether ``name`` is registered and heartbeated within ``max_age`` seconds."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(node_key(name))
    pipe.ttl(node_key(name))
    pipe.hgetall(kgw_node_key(name))  # kgworker's own fields: version, run id
    raw, ttl, ours = await pipe.execute()
    raw = {**ours, **raw} if raw else raw
    if not raw:
        return Liveness(False, f"node {name}: not registered (no {node_key(name)}): never "
                               "started here, stopped, or silent for over 3 minutes")
    age = NODE_TTL - int(ttl) if int(ttl) >= 0 else _age_from_field(_field(raw, "last_heartbeat"))
    if age is None:
        return Liveness(False, f"node {name}: registered, but its heartbeat time is unreadable")
    pid, version = _field(raw, "pid"), _field(raw, "version")
    about = ", ".join(p for p in (f"pid {pid}" if pid else "",
                                  f"version {version}" if version else "") if p)
    if age > max_age:
        return Liveness(False, f"node {name}: last heartbeat {age:.0f} s ago (limit "
                               f"{max_age:g} s): stuck, or its event loop is blocked", age)
    return Liveness(True, f"node {name}: alive, heartbeat {age:.0f} s ago"
                          + (f" ({about})" if about else ""), age)
