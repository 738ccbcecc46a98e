"""A task's chapter counts and the chaishu progress event built from them (pure data).

The counts are the task's counters or a recount of its chapter rows under the task row
lock (:mod:`kgworker.store.tasks`); :meth:`Progress.payload` is the ``kg_task_progress`` event
the chaishu web tab listens for (docs/chaishu-compat.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import TaskStatus


@dataclass(frozen=True, slots=True)
class Progress:
    """Chapter counts of one task (from its counters, ``running`` folded into ``pending``,
    or recounted from its chapter rows)."""

    task_id: int
    status: str
    total: int = 0
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    entities: int = 0
    relations: int = 0

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.running == 0

    def payload(self) -> dict[str, Any]:
        """The chaishu ``kg_task_progress`` event."""
        done = self.completed + self.failed + self.skipped
        percent = round(done * 100 / self.total, 2) if self.total else 100.0
        failed = self.failed + self.pending if self.status == TaskStatus.FAILED else self.failed
        return {
            "type": "kg_task_progress",
            "task_id": self.task_id,
            "status": self.status,
            "progress": percent,
            "completed_chapters": self.completed,
            "failed_chapters": failed,
            "total_chapters": self.total,
            "updated_at": chaishu_now().isoformat(),
        }
