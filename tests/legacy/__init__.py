"""A simulator of the old chaishu knowledge-graph worker, for migration-window tests.

During a migration, kgworker nodes run beside old workers on the same Redis, MySQL and
Neo4j. These modules reproduce what the old side does to that shared state, flaws
included, using raw SQL and raw Redis commands only (no kgworker internals):

- :mod:`.worker` / :mod:`.slot`: the old worker node, ``python -m tests.legacy.worker``;
- :mod:`.process`: :class:`LegacyProcess`, that node as a test subprocess;
- :mod:`.status`: the old worker-status reader (the web tab's view; deletes dead keys);
- :mod:`.guard`: the old zombie guard;
- :mod:`.resets`: the chaishu app's restart, retry, startup recovery and delete;
- :mod:`.data`: chaishu rows for tests; :mod:`.codec`: keys, encoding, clocks.
"""

from .codec import FAIL_MARKER, LOCAL_NODE_PREFIX, queue_item, queue_key, worker_key
from .guard import GuardResult, guard_once
from .process import LegacyProcess
from .resets import (
    choose_provider,
    delete_task,
    purge_task_graph,
    recover_interrupted,
    requeue,
    restart_task,
    retry_failed_chapters,
)
from .status import LegacyStatus, WorkerEntry, pid_alive, read_worker_status

__all__ = [
    "FAIL_MARKER",
    "LOCAL_NODE_PREFIX",
    "GuardResult",
    "LegacyProcess",
    "LegacyStatus",
    "WorkerEntry",
    "choose_provider",
    "delete_task",
    "guard_once",
    "pid_alive",
    "purge_task_graph",
    "queue_item",
    "queue_key",
    "read_worker_status",
    "recover_interrupted",
    "requeue",
    "restart_task",
    "retry_failed_chapters",
    "worker_key",
]
