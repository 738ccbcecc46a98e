"""Entity resolution: the per-novel alias table ``kgworker_entity_aliases``.

Revision ID: 0003_entity_aliases
Revises: 0002_kgworker
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_entity_aliases"
down_revision: str | None = "0002_kgworker"
branch_labels: str | None = None
depends_on: str | None = None

NAME = sa.String(191).with_variant(sa.String(191, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "kgworker_entity_aliases",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("novel_id", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("alias", NAME, nullable=False),
        sa.Column("canonical", NAME, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint(
            "novel_id",
            "entity_type",
            "kind",
            "alias",
            "canonical",
            name="uq_kgworker_entity_aliases",
        ),
        sa.Index("ix_kgworker_entity_aliases_novel", "novel_id", "id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("kgworker_entity_aliases")
