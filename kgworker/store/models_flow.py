"""``kgworker_task_moves``: a queued task moved from a suspended provider to a backup.

One row per move (provider fallback, :mod:`kgworker.llm.fallback`). Which provider and
model produced each chapter is on ``kgworker_chapter_runs`` (``provider``, ``model``); this
table says when and why the task changed queues, so the two together explain a book whose
chapters came from more than one model.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from kgworker.store.models import Base


class TaskMove(Base):
    """One move of a waiting task to another provider's queue."""

    __tablename__ = "kgworker_task_moves"
    __table_args__ = (
        Index("ix_kgworker_task_moves_task", "task_id", "id"),
        {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    task_id: Mapped[int] = mapped_column(Integer, nullable=False)
    from_provider: Mapped[str] = mapped_column(String(100), nullable=False)
    to_provider: Mapped[str] = mapped_column(String(100), nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False)
    node: Mapped[str | None] = mapped_column(String(200))
    moved_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=func.now())
