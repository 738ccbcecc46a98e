"""kgworker's own tables: chapter claims and leases, chapter runs, LLM calls and cache.

Revision ID: 0002_kgworker
Revises: 0001_chaishu
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002_kgworker"
down_revision: str | None = "0001_chaishu"
branch_labels: str | None = None
depends_on: str | None = None

MYSQL_OPTS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
PRECISE = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _int(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "kgworker_chapter_claims",
        sa.Column("task_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("chapter_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("token", sa.String(32), nullable=True, unique=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_until", PRECISE, nullable=True),
        _int("attempts"),
        sa.Column("claimed_at", PRECISE, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Index("ix_kgworker_chapter_claims_lease", "lease_until"),
        sa.Index("ix_kgworker_chapter_claims_owner", "owner"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "kgworker_chapter_runs",
        sa.Column("task_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("chapter_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        *[_int(name) for name in ("attempts", "extract_ms", "graph_ms", "total_ms", "llm_calls",
                                  "prompt_tokens", "completion_tokens")],
        sa.Column("cost", sa.Float(), nullable=False),
        _int("entities"),
        _int("relations"),
        sa.Column("dropped", sa.JSON(), nullable=True),
        sa.Column("finished_at", PRECISE, nullable=True),
        **MYSQL_OPTS,
    )
    op.create_table(
        "kgworker_llm_calls",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("chapter_id", sa.Integer(), nullable=True),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt_version", sa.String(50), nullable=True),
        sa.Column("purpose", sa.String(50), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        *[_int(name) for name in ("prompt_tokens", "completion_tokens", "latency_ms", "retries")],
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("created_at", PRECISE, nullable=False),
        sa.Index("ix_kgworker_llm_calls_task_chapter", "task_id", "chapter_id"),
        sa.Index("ix_kgworker_llm_calls_provider_created", "provider", "created_at"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "kgworker_llm_cache",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt_version", sa.String(50), nullable=True),
        sa.Column("response", LONGTEXT, nullable=False),
        _int("prompt_tokens"),
        _int("completion_tokens"),
        _int("hits"),
        sa.Column("created_at", PRECISE, nullable=False),
        **MYSQL_OPTS,
    )


def downgrade() -> None:
    for name in (
        "kgworker_llm_cache", "kgworker_llm_calls", "kgworker_chapter_runs",
        "kgworker_chapter_claims",
    ):
        op.drop_table(name)
