"""A unique id per LLM call record, so a retried insert cannot count one call twice.

Revision ID: 0007_llm_call_ids
Revises: 0006_task_queues

Rows written before this revision have no id (NULL, which a unique index allows many of).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_llm_call_ids"
down_revision: str | None = "0006_task_queues"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("kgworker_llm_calls", sa.Column("call_id", sa.String(32), nullable=True))
    op.create_index("ux_kgworker_llm_calls_call_id", "kgworker_llm_calls", ["call_id"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ux_kgworker_llm_calls_call_id", table_name="kgworker_llm_calls")
    op.drop_column("kgworker_llm_calls", "call_id")
