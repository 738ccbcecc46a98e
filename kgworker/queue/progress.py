"""Publishing a task's progress on the chaishu channel (``KG_PROGRESS_CHANNEL``).

Fire and forget: a lost event only delays the web tab, which also reads the task row.
"""

from __future__ import annotations

import json
import logging

from kgworker.domain.progress import Progress
from kgworker.queue.connection import RedisClient

log = logging.getLogger(__name__)


async def publish_progress(redis: RedisClient, channel: str, progress: Progress) -> None:
    """Publish the chaishu progress event; a lost event only delays the web tab."""
    try:
        await redis.publish(channel, json.dumps(progress.payload()))
    except Exception:
        log.warning("progress event not published", extra={"task_id": progress.task_id},
                    exc_info=True)
