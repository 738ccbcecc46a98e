"""The chaishu application's tables, as kgworker maps them (docs/chaishu-compat.md).

They belong to the chaishu application: names, columns and status strings are kept
exactly, and kgworker never gives an old column a new meaning. ``kgworker db upgrade``
creates them only where absent (a fresh database for tests or the demo).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kgworker.domain.status import ChapterStatus, TaskStatus
from kgworker.store.schema.base import Base


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
    status: Mapped[str] = mapped_column(String(20), default=TaskStatus.CREATED.value, index=True)
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
    status: Mapped[str] = mapped_column(String(20), default=ChapterStatus.PENDING.value, index=True)
    entities_extracted: Mapped[int] = mapped_column(Integer, default=0)
    relations_extracted: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
