"""Log set-up: readable lines (or JSON) with node, provider, task and chapter; no secrets.

Context travels in ``extra={"provider": ..., "task_id": ..., "chapter_id": ...}``. A filter
replaces every configured secret value with ``***`` as a last line of defence: code never
logs secrets on purpose, but a driver's error message might quote a URL.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from typing import Any

from kgworker.config import Settings
from kgworker.config.redact import install_filter, secret_values

CONTEXT_FIELDS = ("node", "provider", "task_id", "chapter_id")
_QUIET_LIBRARIES = ("neo4j", "httpx", "httpcore", "asyncio", "aiosqlite", "alembic")


class NodeFilter(logging.Filter):
    """Stamps the node name on every record."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "node", None):
            record.node = self.node
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) not in (None, "")
        )
        record.context = f" [{context}]" if context else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(settings: Settings, *, extra_secrets: list[str] | None = None) -> None:
    """Configure the root logger for a worker process (idempotent)."""
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = TextFormatter(
            "%(asctime)s %(levelname)-7s %(name)s%(context)s %(message)s", "%Y-%m-%d %H:%M:%S"
        )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.log_file,
                maxBytes=settings.log_max_bytes,
                backupCount=settings.log_backup_count,
                encoding="utf-8",
            )
        )
    secret_filter = install_filter(secret_values(settings) + (extra_secrets or []))
    node_filter = NodeFilter(settings.kg_worker_node_name)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(node_filter)
        handler.addFilter(secret_filter)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
