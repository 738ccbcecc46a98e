"""In-process LLM call statistics, exported by ``/metrics`` at scrape time.

The LLM client records each provider call here with plain dict updates, so it needs no
Prometheus import and pays nothing when nobody scrapes; :mod:`kgworker.observe.metrics`
turns the numbers into families. One process-wide instance, :data:`LLM_STATS`, because
every provider client of a node feeds the same endpoint.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the latency histogram; LLM calls take from 0.1 s to minutes.
LATENCY_BUCKETS: tuple[float, ...] = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass
class LlmStats:
    """Counters per provider; ``latency`` keyed by (provider, model)."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  #: (provider, outcome)
    tokens: Counter[tuple[str, str]] = field(default_factory=Counter)  #: (provider, kind)
    cost_usd: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    retries: Counter[str] = field(default_factory=Counter)
    cache_hits: Counter[str] = field(default_factory=Counter)
    rate_wait_seconds: defaultdict[str, float] = field(
        default_factory=lambda: defaultdict(float)
    )
    rate_waits: Counter[str] = field(default_factory=Counter)
    latency: dict[tuple[str, str], _Histogram] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_call(
        self,
        provider: str,
        *,
        model: str = "",
        seconds: float,
        outcome: str = "ok",
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        retries: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """One finished provider call (after its retries); ``outcome`` e.g. ok, error, cached."""
        with self._lock:
            self.requests[(provider, outcome)] += 1
            if outcome == "cached":
                self.cache_hits[provider] += 1
            else:
                self.latency.setdefault((provider, model), _Histogram()).observe(seconds)
            self.tokens[(provider, "prompt")] += prompt_tokens
            self.tokens[(provider, "completion")] += completion_tokens
            self.retries[provider] += retries
            self.cost_usd[provider] += cost_usd

    def record_rate_wait(self, provider: str, seconds: float) -> None:
        """Time a call spent waiting for the shared RPM/TPM budget or a 429 cool-down."""
        with self._lock:
            self.rate_waits[provider] += 1
            self.rate_wait_seconds[provider] += seconds

    def reset(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            for counter in (
                self.requests,
                self.tokens,
                self.cost_usd,
                self.retries,
                self.cache_hits,
                self.rate_wait_seconds,
                self.rate_waits,
            ):
                counter.clear()
            self.latency.clear()


#: The node's one instance; the LLM client calls ``LLM_STATS.record_call(...)``.
LLM_STATS = LlmStats()
