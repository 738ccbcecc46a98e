"""Provider fallback: who produced each chapter, and the moves of waiting tasks.

Revision ID: 0004_flow_control
Revises: 0003_entity_aliases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_flow_control"
down_revision: str | None = "0003_entity_aliases"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("kgworker_chapter_runs", sa.Column("provider", sa.String(100), nullable=True))
    op.add_column("kgworker_chapter_runs", sa.Column("model", sa.String(200), nullable=True))
    op.create_table(
        "kgworker_task_moves",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("from_provider", sa.String(100), nullable=False),
        sa.Column("to_provider", sa.String(100), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("moved_at", sa.DateTime(), nullable=False, server_default=sa.func.now()),
        sa.Index("ix_kgworker_task_moves_task", "task_id", "id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("kgworker_task_moves")
    op.drop_column("kgworker_chapter_runs", "model")
    op.drop_column("kgworker_chapter_runs", "provider")
