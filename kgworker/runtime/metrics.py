"""In-process counters of one node, read by status output and exported as metrics later.

Plain counters keyed by provider (or by supervised service), so the runtime pays one dict
update per event and the exporter decides names and types.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RuntimeMetrics:
    """Counters since the process started; ``in_flight`` is a gauge."""

    in_flight: Counter[str] = field(default_factory=Counter)  #: slots busy, per provider
    claims: Counter[str] = field(default_factory=Counter)  #: queue items claimed
    completions: Counter[str] = field(default_factory=Counter)  #: claims acknowledged
    failures: Counter[str] = field(default_factory=Counter)  #: handler errors (jobs and units)
    retries: Counter[str] = field(default_factory=Counter)  #: items put back after a failure
    dead_letters: Counter[str] = field(default_factory=Counter)  #: items sent to the DLQ
    dropped: Counter[str] = field(default_factory=Counter)  #: stale items acknowledged unworked
    stalls: Counter[str] = field(default_factory=Counter)  #: expired claims the reaper handled
    rescued: Counter[str] = field(default_factory=Counter)  #: items swept back from active
    lease_losses: Counter[str] = field(default_factory=Counter)  #: claims/units lost locally
    released: Counter[str] = field(default_factory=Counter)  #: items put back at shutdown
    units_done: Counter[str] = field(default_factory=Counter)  #: units finished here
    crashes: Counter[str] = field(default_factory=Counter)  #: per supervised service
    restarts: Counter[str] = field(default_factory=Counter)  #: per supervised service
    redis_resets: Counter[str] = field(default_factory=Counter)  #: Redis found emptied

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A JSON-friendly copy of every counter."""
        return {name: dict(getattr(self, name)) for name in self.__dataclass_fields__}

    def total(self, name: str) -> int:
        counter: Counter[Any] = getattr(self, name)
        return sum(counter.values())
