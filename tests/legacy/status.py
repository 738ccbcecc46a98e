"""The old worker-status reader: what the chaishu web tab shows, and what the guard trusts.

Behaviour kept on purpose, because kgworker nodes must survive it:

- only ``kg:worker:<integer>`` keys are understood; any other suffix is skipped silently,
  so such a slot and the task it holds are invisible to the tab and to the guard;
- a worker is alive while the registry hash of its node exists, except for workers of the
  web app's embedded node (``主节点-`` prefix) or without a node name, whose pid is probed on
  this host;
- a key judged dead is deleted on the spot (reading has a side effect);
- workers are counted as distinct pids per provider, so equal numbers collapse into one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .codec import (
    LOCAL_NODE_PREFIX,
    WORKER_PREFIX,
    as_float,
    as_int,
    decode_fields,
    node_key,
    text_of,
)


@dataclass(frozen=True)
class WorkerEntry:
    """One ``kg:worker:*`` key as the old reader understood it."""

    key: str
    pid: int
    provider: str | None
    node_name: str | None
    task_id: int | None
    start_time: float | None


@dataclass
class LegacyStatus:
    """The web tab's worker view, plus what the read did (for assertions)."""

    started: bool = False
    #: provider → number of distinct live pids serving it
    providers: dict[str, int] = field(default_factory=dict)
    #: live entries, in key order
    workers: list[WorkerEntry] = field(default_factory=list)
    #: task id → the first live worker that shows it
    active_tasks: dict[int, WorkerEntry] = field(default_factory=dict)
    #: keys whose suffix is not an integer (never judged, never deleted)
    skipped: list[str] = field(default_factory=list)
    #: keys judged dead and deleted by this read
    deleted: list[str] = field(default_factory=list)

    @property
    def worker_count(self) -> int:
        return sum(self.providers.values())


def pid_alive(pid: int) -> bool:
    """A signal-0 probe on this host. Non-positive pids would address process groups."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


async def _alive(redis: Any, pid: int, node_name: str | None) -> bool:
    if node_name and not node_name.startswith(LOCAL_NODE_PREFIX):
        return bool(await redis.exists(node_key(node_name)))
    return pid_alive(pid)


async def read_worker_status(redis: Any, *, delete_dead: bool = True) -> LegacyStatus:
    """Read every ``kg:worker:*`` key the old way; dead ones are deleted like the old code.

    ``delete_dead=False`` only exists to peek without side effects in a test; the real
    reader always deleted.
    """
    status = LegacyStatus()
    keys = sorted({text_of(k) async for k in redis.scan_iter(match=WORKER_PREFIX + "*")})
    pids: dict[str, set[int]] = {}
    for key in keys:
        try:
            pid = int(key[len(WORKER_PREFIX):])
        except ValueError:
            status.skipped.append(key)
            continue
        fields = decode_fields(await redis.hgetall(key))
        if not fields:  # expired between SCAN and HGETALL
            continue
        node_name = fields.get("node_name")
        node = str(node_name) if node_name is not None else None
        if not await _alive(redis, pid, node):
            if delete_dead:
                await redis.delete(key)
            status.deleted.append(key)
            continue
        provider = fields.get("provider")
        entry = WorkerEntry(
            key=key,
            pid=pid,
            provider=str(provider) if provider is not None else None,
            node_name=node,
            task_id=as_int(fields.get("task_id")),
            start_time=as_float(fields.get("start_time")),
        )
        status.workers.append(entry)
        if entry.provider is not None:
            pids.setdefault(entry.provider, set()).add(pid)
        if entry.task_id is not None:
            status.active_tasks.setdefault(entry.task_id, entry)
    status.providers = {name: len(found) for name, found in sorted(pids.items())}
    status.started = bool(status.workers)
    return status
