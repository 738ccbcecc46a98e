"""What the old chaishu workers' registry entries say: which tasks they hold right now.

During a migration window (docs/chaishu-compat.md §7) old workers register
``kg:worker:{pid}`` entries next to ours. kgworker judges them the way chaishu's own status
reader does — an integer suffix, and alive while ``kg:nodes:{node_name}`` exists (a
``主节点-`` node is judged by its pid on its own machine, which we cannot see: such an entry
counts as alive while it exists) — and leaves the tasks they hold alone. Entries of
kgworker nodes (their ``kgw:node:{node}`` exists) are ours and are not counted.
"""

from __future__ import annotations

import json
from typing import Any

from kgworker.keys import WORKER_PREFIX, kgw_node_key, node_key
from kgworker.queue.connection import RedisClient

#: Node names of chaishu's main node, whose workers the reader checks by local pid.
MAIN_NODE_PREFIX = "主节点-"
SCAN_COUNT = 500


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decode(value: Any) -> Any:
    text = _text(value)
    try:
        return json.loads(text)
    except ValueError:
        return text


async def old_worker_tasks(redis: RedisClient) -> frozenset[int]:
    """Task ids of live old-worker entries (see the module docstring)."""
    entries: list[tuple[str, Any]] = []
    async for raw_key in redis.scan_iter(match=WORKER_PREFIX + "*", count=SCAN_COUNT):
        key = _text(raw_key)
        if key[len(WORKER_PREFIX):].isdigit():
            entries.append((key, None))
    if not entries:
        return frozenset()
    pipe = redis.pipeline(transaction=False)
    for key, _ in entries:
        pipe.hmget(key, ["node_name", "task_id"])
    rows = await pipe.execute()
    held: dict[str, set[int]] = {}
    for node_raw, task_raw in rows:
        if task_raw is None:
            continue
        task = _decode(task_raw)
        if isinstance(task, int) and not isinstance(task, bool):
            held.setdefault(str(_decode(node_raw)) if node_raw is not None else "", set()).add(
                task)
    if not held:
        return frozenset()
    names = list(held)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.exists(kgw_node_key(name))
        pipe.exists(node_key(name))
    flags = await pipe.execute()
    live: set[int] = set()
    for i, name in enumerate(names):
        ours, registered = flags[2 * i], flags[2 * i + 1]
        if ours:
            continue
        if registered or name.startswith(MAIN_NODE_PREFIX) or not name:
            live.update(held[name])
    return frozenset(live)
