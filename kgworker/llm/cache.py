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

A prompt that lists the novel's known names (the roster) has a second key, its *redo key*:
the same request without the roster, scoped to one chapter of one task. The roster grows
while a book is built — a chapter's own first attempt adds its names before its graph
write — so a chapter redone after a failure would never match its first request exactly
and would pay again; the redo key answers it with the answer its first attempt received.

A lookup that cannot read the store raises :class:`StoreUnavailable` instead of reporting
a miss: a miss starts a paid call, and the store being down is no reason to pay. A store
that does not answer at all (a frozen server, a lost network path) is the same outage once
:data:`STORE_TIMEOUT` has passed, rather than a chapter that hangs.
"""

from __future__ import annotations

import asyncio
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

from kgworker.domain.extraction import StoreUnavailable
from kgworker.store.schema.ours import LLMCacheEntry

log = logging.getLogger(__name__)

#: Seconds a cache read or write may take before the store counts as unreachable: the
#: connect timeout of the pool (10 s); a healthy lookup takes a millisecond.
STORE_TIMEOUT = 10.0


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


def redo_key(
    provider: str,
    model: str,
    prompt_version: str,
    messages_without_roster: Sequence[Mapping[str, str]],
    params: Mapping[str, Any],
    *,
    task_id: int,
    chapter_id: int,
) -> str:
    """The key of a request of one chapter whatever roster it was sent with (see above)."""
    scoped = {**params, "redo_of": [task_id, chapter_id]}
    return cache_key(provider, model, prompt_version, messages_without_roster, scoped)


def store_error(exc: BaseException) -> str:
    """A short reason for a store failure: the driver's message, not SQLAlchemy's statement
    and parameters (long, and the parameters are prompts)."""
    orig = getattr(exc, "orig", None) or exc
    return f"{type(orig).__name__}: {orig}"[:300]


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class CacheEntry:
    """One answer to store, under each of its keys (the exact key first)."""

    keys: tuple[str, ...]
    answer: CachedAnswer
    provider: str
    model: str
    prompt_version: str


class ResponseCache(Protocol):
    async def get(self, keys: Sequence[str]) -> CachedAnswer | None:
        """The answer under the first key that has one; raises StoreUnavailable."""
        ...

    async def put(self, entries: Sequence[CacheEntry]) -> None:
        """Store answers (idempotent); raises when they could not be written."""
        ...


class MySQLCache:
    """The shared cache in ``kgworker_llm_cache``."""

    def __init__(self, engine: AsyncEngine, *, timeout: float = STORE_TIMEOUT) -> None:
        self._engine = engine
        self._timeout = timeout

    async def get(self, keys: Sequence[str]) -> CachedAnswer | None:
        query = select(
            LLMCacheEntry.cache_key, LLMCacheEntry.response, LLMCacheEntry.prompt_tokens,
            LLMCacheEntry.completion_tokens,
        ).where(LLMCacheEntry.cache_key.in_(list(keys)))
        found = None
        try:
            async with asyncio.timeout(self._timeout), self._engine.connect() as conn:
                rows = {row.cache_key: row for row in (await conn.execute(query)).all()}
                found = next((rows[k] for k in keys if k in rows), None)
                if found is None:
                    return None
                await conn.execute(
                    update(LLMCacheEntry)
                    .where(LLMCacheEntry.cache_key == found.cache_key)
                    .values(hits=LLMCacheEntry.hits + 1)
                )
                await conn.commit()
        except Exception as exc:
            if found is None:
                why = (f"no answer in {self._timeout:g} s" if isinstance(exc, TimeoutError)
                       else store_error(exc))
                raise StoreUnavailable("mysql", f"LLM cache not readable: {why}") from exc
            log.debug("LLM cache hit not counted (%s)", store_error(exc))
        assert found is not None
        return CachedAnswer(found.response, int(found.prompt_tokens),
                            int(found.completion_tokens))

    async def put(self, entries: Sequence[CacheEntry]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [
            {
                "cache_key": key,
                "provider": entry.provider,
                "model": entry.model,
                "prompt_version": entry.prompt_version,
                "response": entry.answer.text,
                "prompt_tokens": entry.answer.prompt_tokens,
                "completion_tokens": entry.answer.completion_tokens,
                "hits": 0,
                "created_at": now,
            }
            for entry in entries
            for key in entry.keys
        ]
        if not rows:
            return
        insert = mysql_insert(LLMCacheEntry)
        statement = insert.on_duplicate_key_update(response=insert.inserted.response)
        async with asyncio.timeout(self._timeout), self._engine.begin() as conn:
            await conn.execute(statement, rows)  # one multi-row INSERT, compiled once
