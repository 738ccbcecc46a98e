"""Chaishu tables, created only where absent.

Against a live chaishu database every table already exists and this revision does nothing:
a chaishu table is never altered or dropped by kgworker (docs/chaishu-compat.md §1). On an empty
database (tests, a fresh install) it creates them as chaishu has them, so the worker can run
without the main application. The definitions are frozen here on purpose, not read from the
models, so later model edits cannot change what an applied revision meant.

Revision ID: 0001_chaishu
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001_chaishu"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

MYSQL_OPTS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _absent(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def _stamps(*names: str) -> list[sa.Column[object]]:
    return [sa.Column(name, sa.DateTime(), nullable=True) for name in names]


def upgrade() -> None:
    if _absent("novels"):
        op.create_table(
            "novels",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("title", sa.String(255), nullable=False),
            sa.Column("author", sa.String(255), nullable=True),
            **MYSQL_OPTS,
        )
    if _absent("chapters"):
        op.create_table(
            "chapters",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("novel_id", sa.Integer(), sa.ForeignKey("novels.id"), nullable=False),
            sa.Column("title", sa.String(255), nullable=True),
            sa.Column("content", sa.Text(), nullable=True),
            sa.Column("chapter_number", sa.Integer(), nullable=False),
            sa.Column("word_count", sa.Integer(), nullable=True),
            sa.Index("ix_chapters_novel_id", "novel_id"),
            **MYSQL_OPTS,
        )
    if _absent("ai_providers"):
        op.create_table(
            "ai_providers",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(100), nullable=False, unique=True),
            sa.Column("display_name", sa.String(100), nullable=True),
            sa.Column("api_key", sa.String(500), nullable=True),
            sa.Column("base_url", sa.String(500), nullable=True),
            sa.Column("models", sa.JSON(), nullable=True),
            sa.Column("is_active", sa.Boolean(), nullable=False),
            *_stamps("created_at", "updated_at"),
            **MYSQL_OPTS,
        )
    if _absent("knowledge_graph_configs"):
        op.create_table(
            "knowledge_graph_configs",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("ai_provider", sa.String(100), nullable=True),
            sa.Column("ai_model", sa.String(100), nullable=True),
            sa.Column("use_ai", sa.Boolean(), nullable=False),
            sa.Column("max_content_length", sa.Integer(), nullable=False),
            sa.Column("enable_entity_extraction", sa.Boolean(), nullable=False),
            sa.Column("enable_relation_extraction", sa.Boolean(), nullable=False),
            sa.Column("entity_types", sa.JSON(), nullable=True),
            sa.Column("relation_types", sa.JSON(), nullable=True),
            sa.Column("rule_config", sa.JSON(), nullable=True),
            sa.Column("is_default", sa.Boolean(), nullable=False),
            sa.Column("is_system", sa.Boolean(), nullable=False),
            **MYSQL_OPTS,
        )
    if _absent("knowledge_graph_tasks"):
        counters = [
            sa.Column(name, sa.Integer(), nullable=False)
            for name in (
                "total_chapters", "completed_chapters", "failed_chapters", "skipped_chapters",
            )
        ]
        op.create_table(
            "knowledge_graph_tasks",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("task_name", sa.String(255), nullable=True),
            sa.Column("novel_id", sa.Integer(), sa.ForeignKey("novels.id"), nullable=False),
            sa.Column("chapter_ids", sa.JSON(), nullable=True),
            sa.Column("use_ai", sa.Boolean(), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            *counters,
            sa.Column("current_chapter_id", sa.Integer(), nullable=True),
            sa.Column("total_entities", sa.Integer(), nullable=False),
            sa.Column("total_relations", sa.Integer(), nullable=False),
            sa.Column("error_message", sa.Text(), nullable=True),
            sa.Column("last_error_chapter_id", sa.Integer(), nullable=True),
            sa.Column("auto_retry_enabled", sa.Boolean(), nullable=False),
            sa.Column("retry_interval_minutes", sa.Integer(), nullable=False),
            sa.Column("failed_at", sa.DateTime(), nullable=True),
            sa.Column("retry_scheduled_at", sa.DateTime(), nullable=True),
            sa.Column("retry_count", sa.Integer(), nullable=False),
            *_stamps("created_at", "started_at", "completed_at", "paused_at", "updated_at"),
            sa.Index("ix_knowledge_graph_tasks_novel_id", "novel_id"),
            sa.Index("ix_knowledge_graph_tasks_status", "status"),
            **MYSQL_OPTS,
        )
    if _absent("knowledge_graph_chapter_status"):
        op.create_table(
            "knowledge_graph_chapter_status",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column(
                "kg_task_id",
                sa.Integer(),
                sa.ForeignKey("knowledge_graph_tasks.id", ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("chapter_id", sa.Integer(), sa.ForeignKey("chapters.id"), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("entities_extracted", sa.Integer(), nullable=False),
            sa.Column("relations_extracted", sa.Integer(), nullable=False),
            sa.Column("error_message", sa.Text(), nullable=True),
            *_stamps("created_at", "updated_at", "started_at", "completed_at"),
            sa.Index("ix_knowledge_graph_chapter_status_kg_task_id", "kg_task_id"),
            sa.Index("ix_knowledge_graph_chapter_status_chapter_id", "chapter_id"),
            sa.Index("ix_knowledge_graph_chapter_status_status", "status"),
            sa.Index("idx_kg_chapter_status_task_chapter", "kg_task_id", "chapter_id"),
            **MYSQL_OPTS,
        )


def downgrade() -> None:
    """Never drops chaishu tables: they hold the application's data."""
