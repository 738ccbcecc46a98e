"""``kgworker_entity_aliases``: a novel's alias table (entity resolution), one fact per row.

Rows mirror :class:`kgworker.domain.resolution.AliasRow`: ``kind`` is ``entity`` (the
canonical name itself), ``alias`` (another spelling pointing at it) or ``role`` (a title
that tells homonyms apart, in ``alias``). Rows are only ever added, so concurrent chapters
of one novel can insert with INSERT IGNORE on the unique key; loading them in ``id`` order
rebuilds the same table (``AliasTable.from_rows``). Name columns use a binary collation:
the stored spellings are already normalised, and MySQL's accent/width-insensitive default
collation would merge spellings the resolver keeps apart.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from kgworker.store.models import Base

_NAME = String(191).with_variant(String(191, collation="utf8mb4_bin"), "mysql", "mariadb")


class EntityAlias(Base):
    """One alias-table fact of one novel."""

    __tablename__ = "kgworker_entity_aliases"
    __table_args__ = (
        UniqueConstraint(
            "novel_id",
            "entity_type",
            "kind",
            "alias",
            "canonical",
            name="uq_kgworker_entity_aliases",
        ),
        Index("ix_kgworker_entity_aliases_novel", "novel_id", "id"),
        {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    novel_id: Mapped[int] = mapped_column(Integer, nullable=False)
    entity_type: Mapped[str] = mapped_column(String(20), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    alias: Mapped[str] = mapped_column(_NAME, nullable=False)
    canonical: Mapped[str] = mapped_column(_NAME, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=func.now()
    )
