"""kgworker's own tables (``kgworker_*``): claims, runs, LLM calls and cache, aliases, moves.

Our state lives here and never in chaishu's columns, so dropping kgworker leaves the
chaishu schema as it was.

``kgworker_entity_aliases`` holds a novel's alias table one fact per row, mirroring
:class:`kgworker.domain.aliases.AliasRow`: ``kind`` is ``entity`` (the canonical name
itself), ``alias`` (another spelling pointing at it) or ``role`` (a title that tells
homonyms apart). Rows are only ever added, so concurrent chapters of one novel insert with
INSERT IGNORE on the unique key; loading them in ``id`` order rebuilds the same table. Name
columns use a binary collation: the stored spellings are already normalised, and MySQL's
accent/width-insensitive default collation would merge spellings the resolver keeps apart.

``kgworker_task_moves`` records each move of a waiting task to a backup provider (provider
fallback); which provider and model produced each chapter is on ``kgworker_chapter_runs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from kgworker.store.schema.base import Base, LongText, PreciseDateTime


class ChapterClaim(Base):
    """Who works a chapter now, until when, and how often it was tried.

    A row exists from the first claim on. ``token`` is set while the chapter is claimed
    (fencing: only the holder of the token may finish it) and cleared when it is finished,
    released or reaped. ``lease_until`` is on the database clock (``NOW(6)``).
    ``row_updated_at`` is the chapter row's ``updated_at`` as kgworker last wrote it: when
    the row says otherwise, someone else (chaishu's restart or retry, an old worker) has
    reset it since, and ``attempts`` starts afresh — our count never outlives the chapter
    row state it was about. It is cleared when we finish the chapter (completed or
    failed): such a row is pending again only by someone else's reset.
    """

    __tablename__ = "kgworker_chapter_claims"
    __table_args__ = (
        Index("ix_kgworker_chapter_claims_lease", "lease_until"),
        Index("ix_kgworker_chapter_claims_owner", "owner"),
    )

    task_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chapter_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    token: Mapped[str | None] = mapped_column(String(32), unique=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(PreciseDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(PreciseDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    row_updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class ChapterRun(Base):
    """The last finished run of a chapter: timings, tokens, counts, what was dropped."""

    __tablename__ = "kgworker_chapter_runs"

    task_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chapter_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    extract_ms: Mapped[int] = mapped_column(Integer, default=0)
    graph_ms: Mapped[int] = mapped_column(Integer, default=0)
    total_ms: Mapped[int] = mapped_column(Integer, default=0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    entities: Mapped[int] = mapped_column(Integer, default=0)
    relations: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[Any | None] = mapped_column(JSON)
    finished_at: Mapped[datetime | None] = mapped_column(PreciseDateTime)
    #: Who produced the chapter (migration 0004): a task moved to a backup shows it here.
    provider: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))


class LLMCall(Base):
    """One provider call (accounting: tokens, latency, retries, cost).

    ``call_id`` (migration 0007) is unique: a record whose insert is retried after a lost
    reply is skipped the second time, so one call is never counted twice.
    """

    __tablename__ = "kgworker_llm_calls"
    __table_args__ = (
        Index("ix_kgworker_llm_calls_task_chapter", "task_id", "chapter_id"),
        Index("ix_kgworker_llm_calls_provider_created", "provider", "created_at"),
        Index("ux_kgworker_llm_calls_call_id", "call_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[int | None] = mapped_column(Integer)
    chapter_id: Mapped[int | None] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_version: Mapped[str | None] = mapped_column(String(50))
    purpose: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    http_status: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(PreciseDateTime)
    call_id: Mapped[str | None] = mapped_column(String(32))


class LLMCacheEntry(Base):
    """A provider answer keyed by a hash of the request (LLM issue decides if it is used)."""

    __tablename__ = "kgworker_llm_cache"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_version: Mapped[str | None] = mapped_column(String(50))
    response: Mapped[str] = mapped_column(LongText)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(PreciseDateTime)


_NAME = String(191).with_variant(String(191, collation="utf8mb4_bin"), "mysql", "mariadb")


class EntityAlias(Base):
    """One alias-table fact of one novel."""

    __tablename__ = "kgworker_entity_aliases"
    __table_args__ = (
        UniqueConstraint(
            "novel_id",
            "entity_type",
            "kind",
            "alias",
            "canonical",
            name="uq_kgworker_entity_aliases",
        ),
        Index("ix_kgworker_entity_aliases_novel", "novel_id", "id"),
        {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    novel_id: Mapped[int] = mapped_column(Integer, nullable=False)
    entity_type: Mapped[str] = mapped_column(String(20), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    alias: Mapped[str] = mapped_column(_NAME, nullable=False)
    canonical: Mapped[str] = mapped_column(_NAME, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=func.now()
    )


class TaskMove(Base):
    """One move of a waiting task to another provider's queue."""

    __tablename__ = "kgworker_task_moves"
    __table_args__ = (
        Index("ix_kgworker_task_moves_task", "task_id", "id"),
        {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    task_id: Mapped[int] = mapped_column(Integer, nullable=False)
    from_provider: Mapped[str] = mapped_column(String(100), nullable=False)
    to_provider: Mapped[str] = mapped_column(String(100), nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False)
    node: Mapped[str | None] = mapped_column(String(200))
    moved_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=func.now())


class TaskQueue(Base):
    """The queue a task was last seen on, so a lost queue item can be pushed back there.

    Recorded when a node sees the item (in the queue, or when it claims it) and updated
    when provider fallback moves the task on purpose; the chaishu task row has no provider
    column. Only tasks recorded here are reconciled after Redis loses its data: a
    ``created`` task that was never pushed is the application's business.
    """

    __tablename__ = "kgworker_task_queues"
    __table_args__ = ({"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"},)

    task_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    provider: Mapped[str] = mapped_column(String(100), nullable=False)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class PendingChapter(Base):
    """A chapter of a task that may be pending, keyed in claim order.

    chaishu's tables have no index that yields a task's pending rows in chapter_number
    order (and kgworker never alters them, docs/chaishu-compat.md §1), so the claim walks
    this primary key instead of sorting the task's rows. It is a hint, never the truth:
    the chapter row decides the claim, a hint whose row is not pending is deleted when a
    claim meets it, and a task's hints are seeded again from its chapter rows when it
    starts or when a claim finds none (:mod:`kgworker.store.pending`).
    """

    __tablename__ = "kgworker_pending_chapters"

    task_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chapter_number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chapter_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
