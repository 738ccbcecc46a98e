"""Parsers of the compact settings strings: provider limits, prices and fallback chains.

Pure functions of a string, kept with the settings so that a bad value is refused when the
settings are read (exit code 2, one line naming the variable) and never by a component
halfway through a run. The components that use the parsed values import them from here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta, timezone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderLimit:
    rpm: int = 0
    tpm: int = 0


def parse_limits(spec: str) -> dict[str, ProviderLimit]:
    """``deepseek:rpm=60,tpm=100000;zhipu:rpm=30`` → limits by provider (``*`` = default)."""
    limits: dict[str, ProviderLimit] = {}
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep, rest = entry.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"KG_PROVIDER_LIMITS: expected name:rpm=N,tpm=N, got {entry!r}")
        values: dict[str, int] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, _, number = item.partition("=")
            if key.strip() not in ("rpm", "tpm") or not number.strip().isdigit():
                raise ValueError(f"KG_PROVIDER_LIMITS: bad item {item!r} in {entry!r}")
            values[key.strip()] = int(number)
        limits[name.strip().lower()] = ProviderLimit(**values)
    return limits


@dataclass(frozen=True)
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens


class PriceTable:
    """``deepseek-chat=0.27/1.10;gpt-4o=2.5/10;*=1/2`` (``*`` = any other model)."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = prices
        self._warned: set[str] = set()

    @classmethod
    def parse(cls, spec: str) -> PriceTable:
        prices: dict[str, Price] = {}
        for entry in filter(None, (part.strip() for part in spec.split(";"))):
            model, sep, pair = entry.rpartition("=")
            inp, slash, out = pair.partition("/")
            try:
                if not sep or not slash or not model.strip():
                    raise ValueError(entry)
                prices[model.strip()] = Price(float(inp), float(out))
            except ValueError:
                raise ValueError(f"KG_LLM_PRICES: expected model=in/out, got {entry!r}") from None
        return cls(prices)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self._prices.get(model) or self._prices.get("*")
        if price is None:
            if model not in self._warned and self._prices:
                log.warning("no price for model %s in KG_LLM_PRICES: cost counted as 0", model)
            self._warned.add(model)
            return 0.0
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


def parse_fallback(spec: str) -> dict[str, tuple[str, ...]]:
    """``deepseek:qwen-local,rules;zhipu:rules`` → backups in order, by provider."""
    chains: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep, rest = entry.partition(":")
        backups = tuple(b.strip().lower() for b in rest.split(",") if b.strip())
        if not sep or not name.strip() or not backups:
            raise ValueError(f"KG_PROVIDER_FALLBACK: expected name:backup,backup, got {entry!r}")
        if name.strip().lower() in backups:
            raise ValueError(f"KG_PROVIDER_FALLBACK: {name.strip()} cannot back itself up")
        chains[name.strip().lower()] = backups
    return chains


#: The zone the chaishu application writes in (its servers run in UTC+8).
DEFAULT_OFFSET = "+08:00"
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


def parse_offset(text: str) -> timezone:
    """``+08:00`` → that fixed zone; ValueError for anything else."""
    match = _OFFSET.match(text.strip())
    if match is None:
        raise ValueError(f"expected an offset like +08:00, got {text!r}")
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14):
        raise ValueError(f"offset out of range: {text!r}")
    return timezone(-delta if sign == "-" else delta)
