"""The node registry, in the shape the chaishu web tab and the old worker read it.

chaishu's status reader (docs/chaishu-compat.md §7) lists ``kg:worker:*``, reads each key's
suffix as an integer pid and skips any other key, and its guard resets every ``running``
task that no live entry names. So every slot of this node has a ``kg:worker:{N}`` key
whose N is unique across the fleet (``INCR kgw:worker_seq``, never a PID: PIDs collide
across containers), with chaishu's fields JSON-encoded: provider, pid (= N), node_name,
last_heartbeat (epoch s), and task_id and start_time while it shows a task.

Which task a key shows: a busy slot shows its chapter's task, an idle slot none; and every
task this node holds (its queue claim: also between chapters, while chapters wait for a
rate limit or a retry) has an entry of its own, written before the task becomes
``running`` and kept until the claim ends, so the old guard never takes a held task for a
zombie. A held task never moves between entries: chaishu's reader lists the keys first
and reads them one by one afterwards, and a task moved from one entry to another in
between would look unshown for that pass. Such an entry carries ``kgw_held`` (a field
chaishu's reader does not read), so our own fleet views count slots without it.

``kg:nodes:{node}`` carries chaishu's fields only (timestamps as naive chaishu-local ISO
strings, as chaishu writes them); the richer state (providers, limits,
run id, version, our entry numbers) lives under ``kgw:node:{node}``. The node key and the
entries are refreshed together every ``KG_HEARTBEAT_INTERVAL`` with one TTL, the node key
outliving its entries, so chaishu's reader never sees an entry of ours without its node.
Changes are flushed in one pipeline about once a second, not per job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from kgworker.domain.clock import chaishu_now
from kgworker.keys import (
    EPOCH_KEY,
    HELD_FIELD,
    WORKER_SEQ_KEY,
    kgw_node_key,
    node_key,
    worker_key,
)
from kgworker.queue import liveness
from kgworker.queue.connection import REDIS_ERRORS
from kgworker.queue.liveness import new_epoch
from kgworker.runtime.context import NodeContext
from kgworker.runtime.slots import Slot
from kgworker.version import __version__

log = logging.getLogger(__name__)

#: TTL of the node key (chaishu's is 180 s); the entries expire a little earlier.
NODE_TTL = 180
ENTRY_MARGIN = 10
FLUSH_SECONDS = 1.0
#: Entry numbers reserved per INCRBY (held claims come and go with every task).
NUMBER_BLOCK = 16

Fields = dict[str, Any]


def encode(values: Fields) -> dict[Any, Any]:
    """chaishu's hash encoding: every field JSON-encoded (a string keeps its quotes)."""
    return {name: json.dumps(value, ensure_ascii=False) for name, value in values.items()}


class Registry:
    """Writes this node's registry keys and removes them at shutdown."""

    def __init__(self, ctx: NodeContext, providers: list[str]) -> None:
        self.ctx = ctx
        self.providers = providers
        self.pid = os.getpid()
        self.started_at = chaishu_now().isoformat()
        self.numbers: dict[object, int] = {}  #: slot or held claim id → its entry number
        self.written: dict[int, Fields] = {}  #: entry number → the fields last written
        self._reserve: list[int] = []  #: entry numbers taken from the sequence, not used yet
        self._last_heartbeat = 0.0
        self._flushing = asyncio.Lock()
        self.epoch: str | None = None

    @property
    def ttl(self) -> int:
        return max(NODE_TTL, int(self.ctx.settings.kg_heartbeat_interval * 3))

    async def run(self) -> None:
        while True:
            try:
                await self.flush()
                self.ctx.health.ok("redis")
            except REDIS_ERRORS as exc:
                self.ctx.health.failed("redis", exc)
            await asyncio.sleep(min(FLUSH_SECONDS, self.ctx.settings.kg_heartbeat_interval))

    # --- what the keys should say now --------------------------------------------------
    def node_fields(self) -> Fields:
        return {
            "node_id": self.ctx.node,
            "node_type": "worker",
            "workers_per_provider": self.ctx.settings.kg_workers_per_provider,
            "pid": self.pid,
            "started_at": self.started_at,
            "last_heartbeat": chaishu_now().isoformat(),
        }

    def state_fields(self) -> Fields:
        settings = self.ctx.settings
        return {
            "providers": list(self.providers),
            "max_total": settings.kg_max_total_processes,
            "run_id": self.ctx.owner,
            "version": __version__,
            "entries": sorted(self.numbers.values()),
        }

    def entries(self) -> dict[object, tuple[str, int | None, float | None]]:
        """Slot or held claim → (provider, task id shown, since); see the module docstring."""
        out: dict[object, tuple[str, int | None, float | None]] = {}
        for provider, slots in self.ctx.pool.slots.items():
            for slot in slots:
                busy = slot.busy and slot.task_id is not None
                out[slot] = ((provider, slot.task_id, slot.start_time) if busy
                             else (provider, None, None))
        for claim in self.ctx.claims.values():
            if claim.job is not None:
                out[("held", claim.claimed.claim_id)] = (
                    claim.queue.provider, claim.job.task_id, claim.started)
        return out

    # --- writing -----------------------------------------------------------------------
    async def _number(self, owners: list[object]) -> None:
        """Give each new slot or holder a fleet-unique entry number, from numbers reserved
        in blocks (one INCRBY per block, none for most new claims)."""
        new = [owner for owner in owners if owner not in self.numbers]
        if len(new) > len(self._reserve):
            want = len(new) - len(self._reserve) + NUMBER_BLOCK
            last = int(await self.ctx.redis.incrby(WORKER_SEQ_KEY, want))
            self._reserve.extend(range(last - want + 1, last + 1))
        for owner in new:
            if owner not in self.numbers and self._reserve:  # numbered meanwhile: keep it
                self.numbers[owner] = self._reserve.pop(0)

    async def flush(self) -> None:
        """Write what changed (every entry on a heartbeat); delete entries that ended."""
        async with self._flushing:  # the loop and a job start may flush at once
            await self._flush()

    async def show_now(self, slot: Slot) -> None:
        """Show the task a slot is about to start, before it becomes running, so chaishu's
        guard never sees it running and unshown: the held claims' own entries not written
        yet, in one pipeline; a Redis error is left to the next flush."""
        del slot  # the claim's own entry shows the task (module docstring)
        try:
            held = {owner: entry for owner, entry in self.entries().items()
                    if isinstance(owner, tuple)}
            await self._number(list(held))
            fresh: dict[int, Fields] = {}
            for owner, (provider, task_id, since) in held.items():
                number = self.numbers.get(owner)
                if number is not None:
                    fields = self._fields(owner, number, provider, task_id, since)
                    if self.written.get(number) != fields:
                        fresh[number] = fields
            if not fresh:
                return
            pipe = self.ctx.redis.pipeline(transaction=False)
            for number, fields in fresh.items():
                self._write(pipe, number, fields, int(time.time()))
            await pipe.execute()
            self.written.update(fresh)
        except REDIS_ERRORS as exc:
            self.ctx.health.failed("redis", exc)

    def _fields(
        self, owner: object, number: int, provider: str, task_id: int | None,
        since: float | None,
    ) -> Fields:
        fields: Fields = {"provider": provider, "pid": number, "node_name": self.ctx.node}
        if isinstance(owner, tuple):
            fields[HELD_FIELD] = True  # not a slot: our own views do not count it as one
        if task_id is not None:
            fields.update(task_id=task_id, start_time=since or time.time())
        return fields

    def _write(self, pipe: Any, number: int, fields: Fields, now: int) -> None:
        key = worker_key(str(number))
        if "task_id" not in fields:
            pipe.hdel(key, "task_id", "start_time")
        pipe.hset(key, mapping=encode({**fields, "last_heartbeat": now}))
        pipe.expire(key, self.ttl - ENTRY_MARGIN)

    async def _flush(self) -> None:
        await liveness.beat(self.ctx.redis, self.ctx.owner)
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.set(EPOCH_KEY, new_epoch(), nx=True)
        pipe.get(EPOCH_KEY)
        _, epoch = await pipe.execute()
        await self._check_epoch(epoch)
        entries = self.entries()
        await self._number(list(entries))
        beat = time.monotonic() - self._last_heartbeat >= self.ctx.settings.kg_heartbeat_interval
        now = int(time.time())
        wanted = {self.numbers[owner]: self._fields(owner, self.numbers[owner], *entry)
                  for owner, entry in entries.items()}
        gone = [n for o, n in self.numbers.items() if o not in entries]
        for owner in [o for o in self.numbers if o not in entries]:
            del self.numbers[owner]
        changed = {n: f for n, f in wanted.items() if beat or self.written.get(n) != f}
        if not changed and not gone and not beat:
            return
        pipe = self.ctx.redis.pipeline(transaction=False)
        for number, fields in changed.items():
            self._write(pipe, number, fields, now)
        for number in gone:
            pipe.delete(worker_key(str(number)))
        if beat or gone or set(changed) - set(self.written):
            pipe.hset(kgw_node_key(self.ctx.node), mapping=encode(self.state_fields()))
            pipe.expire(kgw_node_key(self.ctx.node), self.ttl)
        if beat:
            pipe.hset(node_key(self.ctx.node), mapping=encode(self.node_fields()))
            pipe.expire(node_key(self.ctx.node), self.ttl)
        await pipe.execute()
        for number in gone:
            self.written.pop(number, None)
        self.written.update(changed)
        if beat:
            self._last_heartbeat = time.monotonic()

    async def _check_epoch(self, epoch: Any) -> None:
        """A changed epoch means Redis lost its data: renumber our entries and tell the node."""
        value = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if self.epoch is not None and value != self.epoch:
            log.warning("Redis lost its data (restart without persistence?): rebuilding")
            self.numbers.clear()
            self.written.clear()
            self._reserve.clear()  # the sequence starts again: reserved numbers may repeat
            self._last_heartbeat = 0.0
            self.ctx.metrics.redis_resets["redis"] += 1
            for hook in list(self.ctx.on_redis_reset):
                try:
                    await hook()
                except Exception:
                    log.exception("reacting to the Redis reset failed")
        self.epoch = value

    async def remove(self) -> None:
        """Delete every entry and the node keys (clean stop)."""
        keys = [worker_key(str(n)) for n in self.numbers.values()]
        keys += [worker_key(str(n)) for n in self.written if n not in self.numbers.values()]
        keys += [node_key(self.ctx.node), kgw_node_key(self.ctx.node)]
        try:
            await liveness.beat(self.ctx.redis, self.ctx.owner, alive=False)
            pipe = self.ctx.redis.pipeline(transaction=False)
            for key in dict.fromkeys(keys):
                pipe.delete(key)
            await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("could not remove registry keys: %s", exc)

