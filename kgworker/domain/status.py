"""The chaishu statuses of a task and of a chapter row (docs/chaishu-compat.md).

``StrEnum`` members are the exact strings chaishu stores, so they compare equal to column
values and can be written as they are.
"""

from __future__ import annotations

import enum


class TaskStatus(enum.StrEnum):
    """``knowledge_graph_tasks.status``."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ChapterStatus(enum.StrEnum):
    """``knowledge_graph_chapter_status.status`` (``skipped`` exists in chaishu)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


#: A finished task: no worker may start it again without a restart.
FINISHED_TASK = frozenset({TaskStatus.COMPLETED, TaskStatus.CANCELLED})
