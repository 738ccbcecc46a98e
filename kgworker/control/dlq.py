"""``kgworker dlq``: read, requeue and purge a provider's dead-letter queue.

Entries are the runtime's JSON (``raw``, ``reason``, ``node``, ``provider``, ``at``; raw
bytes that were not UTF-8 are base64 with ``raw_encoding``). Requeueing removes one exact
entry and pushes its raw item onto the queue in one script, so two operators requeueing
the same entry cannot put it back twice. The DLQ and the queue share a Cluster hash slot
(see :mod:`kgworker.keys`), which the script needs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from kgworker.control.errors import ControlError
from kgworker.keys import ProviderKeys
from kgworker.queue import scripts
from kgworker.queue.connection import RedisClient


@dataclass(frozen=True)
class DeadLetter:
    index: int
    entry: bytes  #: the stored JSON, byte for byte (what LREM must match)
    fields: dict[str, Any]

    @property
    def raw(self) -> bytes:
        raw = self.fields.get("raw", "")
        if self.fields.get("raw_encoding") == "base64":
            return base64.b64decode(str(raw))
        return str(raw).encode("utf-8")

    def summary(self) -> dict[str, Any]:
        return {"index": self.index, **{k: v for k, v in self.fields.items()}}


def _decode(index: int, entry: Any) -> DeadLetter:
    data = entry if isinstance(entry, bytes) else str(entry).encode()
    try:
        fields = json.loads(data.decode("utf-8", "surrogateescape"))
    except ValueError:
        fields = {"raw": data.decode("utf-8", "replace"), "reason": "unreadable DLQ entry"}
    if not isinstance(fields, dict):
        fields = {"raw": str(fields), "reason": "unreadable DLQ entry"}
    return DeadLetter(index, data, fields)


async def list_entries(redis: RedisClient, provider: str, limit: int = 100) -> list[DeadLetter]:
    keys = ProviderKeys.for_provider(provider)
    entries = await redis.lrange(keys.dlq, 0, max(0, limit - 1))
    return [_decode(i, e) for i, e in enumerate(entries)]


async def size(redis: RedisClient, provider: str) -> int:
    return int(await redis.llen(ProviderKeys.for_provider(provider).dlq))


async def get_entry(redis: RedisClient, provider: str, index: int) -> DeadLetter:
    keys = ProviderKeys.for_provider(provider)
    entry = await redis.lindex(keys.dlq, index)
    if entry is None:
        total = await size(redis, provider)
        raise ControlError(
            f"no entry {index} in the {provider} dead-letter queue ({total} entries)", 404
        )
    return _decode(index, entry)


async def requeue(redis: RedisClient, provider: str, index: int | None) -> list[DeadLetter]:
    """Put one entry (or all, ``index=None``) back at the tail of the provider's queue."""
    keys = ProviderKeys.for_provider(provider)
    targets = (
        [await get_entry(redis, provider, index)]
        if index is not None
        else await list_entries(redis, provider, limit=10_000)
    )
    done: list[DeadLetter] = []
    for letter in targets:
        result = await scripts.run(redis, "dlq_requeue", [keys.dlq, keys.queue],
                                   [letter.entry, letter.raw])
        if int(result) >= 0:
            done.append(letter)
    return done


async def purge(redis: RedisClient, provider: str) -> int:
    """Delete the provider's dead-letter queue; returns how many entries it held."""
    keys = ProviderKeys.for_provider(provider)
    pipe = redis.pipeline(transaction=True)
    pipe.llen(keys.dlq)
    pipe.delete(keys.dlq)
    count, _ = await pipe.execute()
    return int(count)
