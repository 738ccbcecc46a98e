"""SQLAlchemy models: the chaishu tables (contract section 1) and kgworker's own.

The chaishu tables belong to the chaishu application. Their names, columns and status
strings are kept exactly; kgworker never gives an old column a new meaning. Our own state
(claims and leases, attempts, timings, tokens, LLM accounting) lives in ``kgworker_*``
tables, so dropping kgworker leaves the chaishu schema as it was.

``Base`` is shared: another module may declare more ``kgworker_*`` models on it, and the
migrations compare against ``Base.metadata``. Timestamps in chaishu columns are naive
UTC+8 (see :func:`chaishu_now`); lease deadlines use the database clock, so nodes with
skewed clocks still agree on who holds a chapter.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CHAISHU_TZ = timezone(timedelta(hours=8))

#: knowledge_graph_tasks.status values.
TASK_CREATED = "created"
TASK_RUNNING = "running"
TASK_PAUSED = "paused"
TASK_COMPLETED = "completed"
TASK_FAILED = "failed"
TASK_CANCELLED = "cancelled"
TASK_STATUSES = (TASK_CREATED, TASK_RUNNING, TASK_PAUSED, TASK_COMPLETED, TASK_FAILED,
                 TASK_CANCELLED)

#: knowledge_graph_chapter_status.status values (``skipped`` exists in chaishu, unused).
CHAPTER_PENDING = "pending"
CHAPTER_RUNNING = "running"
CHAPTER_COMPLETED = "completed"
CHAPTER_FAILED = "failed"
CHAPTER_SKIPPED = "skipped"

#: Tables owned by the chaishu application: created only when absent, never altered.
CHAISHU_TABLES = (
    "novels",
    "chapters",
    "ai_providers",
    "knowledge_graph_configs",
    "knowledge_graph_tasks",
    "knowledge_graph_chapter_status",
)

#: Alembic's version table, named so it never collides with chaishu's own ``alembic_version``.
VERSION_TABLE = "kgworker_alembic_version"


def chaishu_now() -> datetime:
    """Naive UTC+8 wall-clock time, the way chaishu writes its timestamps."""
    return datetime.now(CHAISHU_TZ).replace(tzinfo=None, microsecond=0)


#: Microsecond DATETIME on MySQL/MariaDB, for leases compared against NOW(6).
PreciseDateTime = DateTime().with_variant(MYSQL_DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(LONGTEXT(), "mysql", "mariadb")


class Base(DeclarativeBase):
    """Declarative base of every kgworker model, chaishu's and ours."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(), dict[str, Any]: JSON}


# --------------------------------------------------------------------------- chaishu --
class Novel(Base):
    __tablename__ = "novels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(255))
    author: Mapped[str | None] = mapped_column(String(255))


class Chapter(Base):
    __tablename__ = "chapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    novel_id: Mapped[int] = mapped_column(ForeignKey("novels.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(255))
    content: Mapped[str | None] = mapped_column(Text)
    chapter_number: Mapped[int] = mapped_column(Integer)
    word_count: Mapped[int | None] = mapped_column(Integer)


class AIProvider(Base):
    __tablename__ = "ai_providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(100))
    api_key: Mapped[str | None] = mapped_column(String(500))
    base_url: Mapped[str | None] = mapped_column(String(500))
    models: Mapped[Any | None] = mapped_column(JSON)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class KnowledgeGraphConfig(Base):
    __tablename__ = "knowledge_graph_configs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    ai_provider: Mapped[str | None] = mapped_column(String(100))
    ai_model: Mapped[str | None] = mapped_column(String(100))
    use_ai: Mapped[bool] = mapped_column(Boolean, default=True)
    max_content_length: Mapped[int] = mapped_column(Integer, default=4000)
    enable_entity_extraction: Mapped[bool] = mapped_column(Boolean, default=True)
    enable_relation_extraction: Mapped[bool] = mapped_column(Boolean, default=True)
    entity_types: Mapped[Any | None] = mapped_column(JSON)
    relation_types: Mapped[Any | None] = mapped_column(JSON)
    rule_config: Mapped[Any | None] = mapped_column(JSON)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    is_system: Mapped[bool] = mapped_column(Boolean, default=False)


class KnowledgeGraphTask(Base):
    __tablename__ = "knowledge_graph_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_name: Mapped[str | None] = mapped_column(String(255))
    novel_id: Mapped[int] = mapped_column(ForeignKey("novels.id"), index=True)
    chapter_ids: Mapped[Any | None] = mapped_column(JSON)
    use_ai: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(20), default=TASK_CREATED, index=True)
    total_chapters: Mapped[int] = mapped_column(Integer, default=0)
    completed_chapters: Mapped[int] = mapped_column(Integer, default=0)
    failed_chapters: Mapped[int] = mapped_column(Integer, default=0)
    skipped_chapters: Mapped[int] = mapped_column(Integer, default=0)
    current_chapter_id: Mapped[int | None] = mapped_column(Integer)
    total_entities: Mapped[int] = mapped_column(Integer, default=0)
    total_relations: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    last_error_chapter_id: Mapped[int | None] = mapped_column(Integer)
    auto_retry_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    retry_interval_minutes: Mapped[int] = mapped_column(Integer, default=10)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime)
    retry_scheduled_at: Mapped[datetime | None] = mapped_column(DateTime)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    paused_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class KnowledgeGraphChapterStatus(Base):
    """One row per (task, chapter). No unique key in chaishu: treated as unique by us."""

    __tablename__ = "knowledge_graph_chapter_status"
    __table_args__ = (
        Index("idx_kg_chapter_status_task_chapter", "kg_task_id", "chapter_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kg_task_id: Mapped[int] = mapped_column(
        ForeignKey("knowledge_graph_tasks.id", ondelete="CASCADE"), index=True
    )
    chapter_id: Mapped[int] = mapped_column(ForeignKey("chapters.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default=CHAPTER_PENDING, index=True)
    entities_extracted: Mapped[int] = mapped_column(Integer, default=0)
    relations_extracted: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)


# --------------------------------------------------------------------------- kgworker --
class ChapterClaim(Base):
    """Who works a chapter now, until when, and how often it was tried.

    A row exists from the first claim on. ``token`` is set while the chapter is claimed
    (fencing: only the holder of the token may finish it) and cleared when it is finished,
    released or reaped. ``lease_until`` is on the database clock (``NOW(6)``).
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
    """One provider call (accounting: tokens, latency, retries, cost); LLM issue fills it."""

    __tablename__ = "kgworker_llm_calls"
    __table_args__ = (
        Index("ix_kgworker_llm_calls_task_chapter", "task_id", "chapter_id"),
        Index("ix_kgworker_llm_calls_provider_created", "provider", "created_at"),
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


def is_chaishu_table(name: str) -> bool:
    return name in CHAISHU_TABLES


# Models declared in their own modules on the same Base; imported here so that
# ``Base.metadata`` (migrations, create_all, drift checks) always includes them.
from kgworker.store import models_alias, models_flow  # noqa: E402,F401
