"""The node registry the chaishu web tab reads (docs/chaishu-compat.md §2).

``kg:nodes:{node}`` is refreshed every ``KG_HEARTBEAT_INTERVAL`` (TTL 180 s), and one
``kg:worker:{slot id}`` per slot carries the task fields only while the slot is busy (TTL
7200 s, refreshed with the node). Values are JSON-encoded, as chaishu writes them. Slot
changes are flushed in one pipeline about once a second rather than per job, so a busy node
pays nothing per job for the registry; a job shorter than that may not show as busy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from kgworker.keys import node_key, worker_key
from kgworker.queue.connection import REDIS_ERRORS
from kgworker.runtime.context import NodeContext
from kgworker.runtime.slots import Slot
from kgworker.version import __version__

log = logging.getLogger(__name__)

NODE_TTL = 180
WORKER_TTL = 7200
FLUSH_SECONDS = 1.0


def _encode(values: dict[str, Any]) -> dict[Any, Any]:
    return {name: json.dumps(value, ensure_ascii=False) for name, value in values.items()}


class Registry:
    """Writes this node's registry keys and removes them at shutdown."""

    def __init__(self, ctx: NodeContext, providers: list[str]) -> None:
        self.ctx = ctx
        self.providers = providers
        self.pid = os.getpid()
        self.started_at = datetime.now(UTC).isoformat()
        self._last_heartbeat = 0.0

    async def run(self) -> None:
        while True:
            try:
                await self.flush()
                self.ctx.health.ok("redis")
            except REDIS_ERRORS as exc:
                self.ctx.health.failed("redis", exc)
            await asyncio.sleep(min(FLUSH_SECONDS, self.ctx.settings.kg_heartbeat_interval))

    def node_fields(self) -> dict[str, Any]:
        settings = self.ctx.settings
        return {
            "node_id": self.ctx.node,
            "node_type": "worker",
            "workers_per_provider": settings.kg_workers_per_provider,
            "pid": self.pid,
            "started_at": self.started_at,
            "last_heartbeat": datetime.now(UTC).isoformat(),
            "providers": list(self.providers),
            "max_total": settings.kg_max_total_processes,
            "run_id": self.ctx.owner,
            "version": __version__,
        }

    def slot_fields(self, slot: Slot) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "provider": slot.provider,
            "pid": self.pid,
            "node_name": self.ctx.node,
            "last_heartbeat": int(time.time()),
        }
        if slot.busy and slot.task_id is not None:
            fields["task_id"] = slot.task_id
            fields["start_time"] = slot.start_time
        return fields

    async def flush(self) -> None:
        """Write dirty and retired slots; on heartbeat, the node and every slot."""
        pool = self.ctx.pool
        beat = time.monotonic() - self._last_heartbeat >= self.ctx.settings.kg_heartbeat_interval
        slots = pool.all_slots() if beat else list(pool.dirty)
        retired = list(pool.retired)
        if not slots and not retired and not beat:
            return
        pool.dirty.difference_update(slots)
        del pool.retired[: len(retired)]
        pipe = self.ctx.redis.pipeline(transaction=False)
        for slot in slots:
            key = worker_key(slot.id)
            fields = self.slot_fields(slot)
            if "task_id" not in fields:
                pipe.hdel(key, "task_id", "start_time")
            pipe.hset(key, mapping=_encode(fields))
            pipe.expire(key, WORKER_TTL)
        for slot in retired:
            pipe.delete(worker_key(slot.id))
        if beat:
            pipe.hset(node_key(self.ctx.node), mapping=_encode(self.node_fields()))
            pipe.expire(node_key(self.ctx.node), NODE_TTL)
        try:
            await pipe.execute()
        except BaseException:
            pool.dirty.update(slots)
            pool.retired.extend(retired)
            raise
        if beat:
            self._last_heartbeat = time.monotonic()

    async def remove(self) -> None:
        """Delete every slot key and the node key (clean stop)."""
        keys = [worker_key(s.id) for s in self.ctx.pool.all_slots() + self.ctx.pool.retired]
        keys.append(node_key(self.ctx.node))
        try:
            pipe = self.ctx.redis.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("could not remove registry keys: %s", exc)
