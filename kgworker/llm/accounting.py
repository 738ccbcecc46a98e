"""What each LLM call cost: tokens, latency, retries and money, one row per call.

Rows go to ``kgworker_llm_calls`` (model ``LLMCall``), so totals per chapter, task and
provider are one GROUP BY away and survive restarts; chaishu's task row has no token or
cost column, so nothing of this is written there. Prices come from ``KG_LLM_PRICES`` in
USD per million tokens; a model without a price costs 0 and is logged once, so a missing
price is visible rather than silently wrong.

Each record carries a ``call_id`` made when the call ends, and the insert skips an id that
is already there: an insert retried after a lost reply (the first try committed, its
answer never arrived) does not count the call twice. Records that cannot be written are
kept and retried by :mod:`kgworker.llm.pending`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import func, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.llm.cache import STORE_TIMEOUT
from kgworker.store.schema.ours import LLMCall

log = logging.getLogger(__name__)


@dataclass
class CallRecord:
    """One provider call as stored in ``kgworker_llm_calls``."""

    provider: str
    model: str
    purpose: str
    status: Literal["ok", "error", "cached"]
    prompt_version: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    retries: int = 0
    cost: float = 0.0
    cached: bool = False
    http_status: int | None = None
    error: str | None = None
    task_id: int | None = None
    chapter_id: int | None = None
    node: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class CallRecorder(Protocol):
    async def record(self, calls: Sequence[CallRecord]) -> None:
        """Insert the records (each once, by ``call_id``); raises when they were not written."""
        ...


class MySQLRecorder:
    """One row per call, in one multi-row insert per batch (the rows as the parameters of
    one cached statement: SQLAlchemy would compile a ``.values([...])`` one every time)."""

    def __init__(self, engine: AsyncEngine, *, timeout: float = STORE_TIMEOUT) -> None:
        self._engine = engine
        self._timeout = timeout  #: a store that does not answer counts as down after this

    async def record(self, calls: Sequence[CallRecord]) -> None:
        rows = []
        for call in calls:
            row = asdict(call)
            if row["error"]:
                row["error"] = row["error"][:2000]
            rows.append(row)
        if not rows:
            return
        # a duplicate call_id is a retry of a committed insert: keep the row as it is
        statement = mysql_insert(LLMCall).on_duplicate_key_update(call_id=LLMCall.call_id)
        async with asyncio.timeout(self._timeout), self._engine.begin() as conn:
            await conn.execute(statement, rows)  # one multi-row INSERT, compiled once


GroupBy = Literal["chapter", "task", "provider"]
_GROUPS: dict[str, tuple[Any, ...]] = {
    "chapter": (LLMCall.task_id, LLMCall.chapter_id),
    "task": (LLMCall.task_id,),
    "provider": (LLMCall.provider, LLMCall.model),
}


async def summarize(
    engine: AsyncEngine, by: GroupBy, *, task_id: int | None = None
) -> list[dict[str, Any]]:
    """Totals per chapter, task or provider (optionally of one task)."""
    columns = _GROUPS[by]
    query = (
        select(
            *columns,
            func.count().label("calls"),
            func.sum(LLMCall.cached).label("cached_calls"),
            func.sum(LLMCall.prompt_tokens).label("prompt_tokens"),
            func.sum(LLMCall.completion_tokens).label("completion_tokens"),
            func.sum(LLMCall.retries).label("retries"),
            func.sum(LLMCall.cost).label("cost"),
            func.avg(LLMCall.latency_ms).label("avg_latency_ms"),
        )
        .group_by(*columns)
        .order_by(*columns)
    )
    if task_id is not None:
        query = query.where(LLMCall.task_id == task_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        for key in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "retries"):
            item[key] = int(item[key] or 0)
        item["cost"] = float(item["cost"] or 0)
        item["avg_latency_ms"] = float(item["avg_latency_ms"] or 0)
        out.append(item)
    return out
