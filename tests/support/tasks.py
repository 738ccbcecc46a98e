"""Task transitions the tests drive through a handler's own stores."""

from __future__ import annotations

from kgworker.chaishu.handler import ChaishuHandler
from kgworker.control.errors import ControlError
from kgworker.control.tasks import restart_task


async def restart(handler: ChaishuHandler, task_id: int) -> bool:
    """The one restart (``kgworker task restart``) on the handler's stores; False if refused."""
    try:
        await restart_task(handler.engine, handler.redis, handler.writer, task_id)
    except ControlError:
        return False
    return True
