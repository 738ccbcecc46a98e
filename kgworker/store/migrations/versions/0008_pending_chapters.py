"""The claim order of pending chapters, so a claim need not sort a task's chapter rows.

Revision ID: 0008_pending_chapters
Revises: 0007_llm_call_ids

Tasks running when this revision is applied get their rows when a node next starts or
joins them, or when a claim finds none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_pending_chapters"
down_revision: str | None = "0007_llm_call_ids"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "kgworker_pending_chapters",
        sa.Column("task_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("chapter_number", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("chapter_id", sa.Integer(), primary_key=True, autoincrement=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("kgworker_pending_chapters")
