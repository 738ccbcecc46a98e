"""Key names, value encoding and clocks exactly as the old chaishu worker used them.

The old code JSON-encoded every Redis value it wrote, hash fields included, so a string
field holds its quotes (``"openai"``). It wrote naive wall-clock datetimes in UTC+8.
Nothing here comes from kgworker: the simulator must keep working while kgworker's own
modules move around, and must show what the old code did, not what ours does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

QUEUE_PREFIX = "kg:ai_queue:"
NODE_PREFIX = "kg:nodes:"
WORKER_PREFIX = "kg:worker:"
#: Workers of the web app's embedded node carry this node-name prefix; their liveness is
#: judged by a local pid check instead of the node's registry key.
LOCAL_NODE_PREFIX = "主节点-"
#: The pseudo provider of tasks with use_ai = false.
RULES = "rules"
WORKER_TTL = 7200
#: Chapter content containing this marker makes the fake extraction fail (tests only).
FAIL_MARKER = "#legacy-fail#"

CHAISHU_TZ = timezone(timedelta(hours=8))


def queue_key(provider: str) -> str:
    """Producers lower-case the provider name for the queue suffix."""
    return QUEUE_PREFIX + provider.lower()


def node_key(node_name: str) -> str:
    return NODE_PREFIX + node_name


def worker_key(worker_id: int | str) -> str:
    return f"{WORKER_PREFIX}{worker_id}"


def queue_item(task_id: int, provider: str) -> str:
    """A queue item as the chaishu producer RPUSHes it."""
    return json.dumps({"task_id": task_id, "provider": provider})


def local_now() -> datetime:
    """Naive UTC+8 wall-clock time, whole seconds (what DATETIME columns keep)."""
    return datetime.now(CHAISHU_TZ).replace(tzinfo=None, microsecond=0)


def local_iso() -> str:
    """Naive UTC+8 ISO string without an offset, as the old ``kg:nodes`` hash holds."""
    return datetime.now(CHAISHU_TZ).replace(tzinfo=None).isoformat()


def text_of(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def encode_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Every field JSON-encoded, the old way (``json.dumps`` defaults)."""
    return {name: json.dumps(value) for name, value in values.items()}


def decode_value(raw: bytes | str) -> Any:
    """A JSON-decoded field; a value someone wrote unencoded comes back as its text."""
    value = text_of(raw)
    try:
        return json.loads(value)
    except ValueError:
        return value


def decode_fields(raw: Mapping[Any, Any]) -> dict[str, Any]:
    return {text_of(name): decode_value(value) for name, value in raw.items()}


def as_int(value: Any) -> int | None:
    """An integer field, or None when absent or unparsable (the old code's try/except)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
