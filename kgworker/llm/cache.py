"""Response cache: a retried or restarted chapter does not pay for the same answer twice.

Stored in MySQL (``kgworker_llm_cache``), not Redis, because:

* it must outlive what Redis is for here: queues and leases in a Redis that chaishu may run
  with ``maxmemory`` and eviction, or flush; a restart of a whole novel weeks later should
  still hit;
* answers are large (kilobytes each, three per chunk in chaishu's flow): a 2,000-chapter
  novel is tens of megabytes, cheap on disk, expensive in Redis memory;
* one lookup costs about a millisecond next to seconds for the call it saves.

The key is a SHA-256 of (provider, model, prompt version, messages, parameters), so a new
prompt version or a changed parameter never reuses an old answer. Only answers that parsed
are stored: a malformed answer is asked again rather than replayed forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.store.schema.ours import LLMCacheEntry

log = logging.getLogger(__name__)


def cache_key(
    provider: str,
    model: str,
    prompt_version: str,
    messages: Sequence[Mapping[str, str]],
    params: Mapping[str, Any],
) -> str:
    payload = [provider.lower(), model, prompt_version, list(map(dict, messages)), dict(params)]
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(
        self, key: str, answer: CachedAnswer, *, provider: str, model: str, prompt_version: str
    ) -> None: ...


class MySQLCache:
    """The shared cache. Lookup failures are logged and treated as misses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, key: str) -> CachedAnswer | None:
        query = select(
            LLMCacheEntry.response, LLMCacheEntry.prompt_tokens, LLMCacheEntry.completion_tokens
        ).where(LLMCacheEntry.cache_key == key)
        try:
            async with self._engine.begin() as conn:
                row = (await conn.execute(query)).first()
                if row is None:
                    return None
                await conn.execute(
                    update(LLMCacheEntry)
                    .where(LLMCacheEntry.cache_key == key)
                    .values(hits=LLMCacheEntry.hits + 1)
                )
        except Exception:
            log.exception("LLM cache lookup failed; calling the provider")
            return None
        return CachedAnswer(row.response, int(row.prompt_tokens), int(row.completion_tokens))

    async def put(
        self, key: str, answer: CachedAnswer, *, provider: str, model: str, prompt_version: str
    ) -> None:
        values = {
            "cache_key": key,
            "provider": provider,
            "model": model,
            "prompt_version": prompt_version,
            "response": answer.text,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "hits": 0,
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        statement = mysql_insert(LLMCacheEntry).values(**values)
        statement = statement.on_duplicate_key_update(response=statement.inserted.response)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(statement)
        except Exception:
            log.exception("could not store an LLM answer in the cache")
