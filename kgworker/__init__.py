"""kgworker: a distributed knowledge-graph worker for chaishu-style novel analysis.

Run a node with :func:`run_worker`; produce work with :func:`enqueue_task`,
:func:`create_task`, :func:`cancel_task`, :func:`retry_task` and :func:`restart_task`
(:mod:`kgworker.control.client`). Everything but the version is imported on first use,
so ``import kgworker`` stays cheap (the CLI's ``--version`` and ``config show`` must not
pay for the store drivers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kgworker.version import __version__

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kgworker.config import Settings
    from kgworker.control.client import (
        cancel_task,
        create_task,
        enqueue_task,
        restart_task,
        retry_task,
    )
    from kgworker.control.enqueue import Enqueued
    from kgworker.control.errors import ControlError
    from kgworker.control.tasks import TaskChange

#: Public names and the module each lives in, imported when first asked for.
_LAZY = {
    "enqueue_task": "kgworker.control.client",
    "create_task": "kgworker.control.client",
    "cancel_task": "kgworker.control.client",
    "retry_task": "kgworker.control.client",
    "restart_task": "kgworker.control.client",
    "ControlError": "kgworker.control.errors",
    "Enqueued": "kgworker.control.enqueue",
    "TaskChange": "kgworker.control.tasks",
}


async def run_worker(settings: Settings | None = None, **kwargs: Any) -> int:
    """Run one worker node until stopped; see :func:`kgworker.chaishu.node.run_worker`."""
    from kgworker.chaishu.node import run_worker as _run_worker

    return await _run_worker(settings, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kgworker' has no attribute {name!r}")


__all__ = [
    "ControlError",
    "Enqueued",
    "TaskChange",
    "__version__",
    "cancel_task",
    "create_task",
    "enqueue_task",
    "restart_task",
    "retry_task",
    "run_worker",
]
