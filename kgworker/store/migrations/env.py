"""Alembic environment: always run through :mod:`kgworker.store.migrate` on a live connection.

The async engine lends a sync connection (``run_sync``), passed in ``config.attributes``.
Our version table is ``kgworker_alembic_version`` so chaishu's own Alembic history, if any,
is never touched.
"""

from __future__ import annotations

from alembic import context

from kgworker.store.schema.base import VERSION_TABLE, Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guard against the alembic CLI
    raise RuntimeError("run migrations with `kgworker db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
