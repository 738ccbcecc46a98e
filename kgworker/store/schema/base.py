"""The declarative base and column types shared by every table kgworker maps.

``Base`` is shared by chaishu's tables (:mod:`.chaishu`) and ours (:mod:`.ours`), and the
migrations compare against ``Base.metadata`` (importing :mod:`kgworker.store.schema`
registers both). Timestamps in chaishu columns are naive chaishu-local time (see
:func:`kgworker.domain.clock.chaishu_now`); lease deadlines use the database clock, so nodes
with skewed clocks still agree on who holds a chapter. docs/chaishu-compat.md lists the
chaishu tables and what kgworker does with each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Text
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.orm import DeclarativeBase

#: Tables owned by the chaishu application: created only when absent, never altered.
CHAISHU_TABLES = (
    "novels",
    "chapters",
    "ai_providers",
    "knowledge_graph_configs",
    "knowledge_graph_tasks",
    "knowledge_graph_chapter_status",
)

#: Alembic's version table, named so it never collides with chaishu's own ``alembic_version``.
VERSION_TABLE = "kgworker_alembic_version"

#: Microsecond DATETIME on MySQL/MariaDB, for leases compared against NOW(6).
PreciseDateTime = DateTime().with_variant(MYSQL_DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(LONGTEXT(), "mysql", "mariadb")


class Base(DeclarativeBase):
    """Declarative base of every kgworker model, chaishu's and ours."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(), dict[str, Any]: JSON}
