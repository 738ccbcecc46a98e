"""Which queue each task was seen on (reconciliation after Redis loses its data).

Revision ID: 0006_task_queues
Revises: 0005_migration_window
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_task_queues"
down_revision: str | None = "0005_migration_window"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "kgworker_task_queues",
        sa.Column("task_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("kgworker_task_queues")
