"""The migration window: which chapter row state a claim's attempt count is about.

Revision ID: 0005_migration_window
Revises: 0004_flow_control
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_migration_window"
down_revision: str | None = "0004_flow_control"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "kgworker_chapter_claims", sa.Column("row_updated_at", sa.DateTime(), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("kgworker_chapter_claims", "row_updated_at")
