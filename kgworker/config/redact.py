"""Keeping secrets out of logs and output: URL redaction and the log filter that masks.

A leaf module (it imports nothing of kgworker), so the settings, the LLM clients that read
API keys at run time, and the logging set-up can all use it. The filter is a last line of
defence: code never logs secrets on purpose, but a driver's error message might quote a
URL or a key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``: the URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


#: Filters installed by :func:`setup_logging`; :func:`register_secrets` extends them.
_FILTERS: list[SecretFilter] = []


def register_secrets(values: Iterable[str]) -> None:
    """Mask more values from now on (secrets read at run time, e.g. ``ai_providers`` keys)."""
    for secret_filter in _FILTERS:
        secret_filter.add(values)


class SecretFilter(logging.Filter):
    """Masks secret values in the final message and in exception text."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        known = set(self.secrets) | {s for s in secrets if len(s) >= 4}
        self.secrets = sorted(known, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self._mask(record.getMessage())
            record.args = None
            if record.exc_info:
                formatter = logging.Formatter()
                record.exc_text = self._mask(formatter.formatException(record.exc_info))
                record.exc_info = None
        return True


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret the settings hold, for masking: each secret value whole, the password
    of a secret URL (also percent-decoded), and each ``api_key`` of ``KG_LLM_PROVIDERS``."""
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            secret = value.get_secret_value()
            values.append(secret)
            values.extend(_parts_of(secret))
    return values


def _parts_of(secret: str) -> list[str]:
    """Secrets inside a secret: a URL's password, the api keys of a providers JSON list."""
    parts: list[str] = []
    if "://" in secret:
        try:
            password = urlsplit(secret).password
        except ValueError:
            password = None
        if password:
            parts += [password, unquote(password)]
    if secret.lstrip().startswith("["):
        try:
            items = json.loads(secret)
        except ValueError:
            items = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("api_key"):
                parts.append(str(item["api_key"]))
    return parts


def install_filter(secrets: list[str]) -> SecretFilter:
    """The process's one secret filter (replacing an earlier one); handlers add it."""
    secret_filter = SecretFilter(secrets)
    _FILTERS[:] = [secret_filter]
    return secret_filter
