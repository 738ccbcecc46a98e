"""Prometheus exposition of one node: its runtime counters, the fleet's queues, LLM calls.

Nothing in the runtime or the LLM client imports Prometheus: they keep plain in-process
counters (:class:`kgworker.runtime.metrics.RuntimeMetrics`,
:data:`kgworker.llm.stats.LLM_STATS`) and this module turns them into families at
scrape time through a custom collector on a registry of our own (never the global one, so
tests and several exporters in one process cannot collide). Queue, DLQ and pause figures
come from Redis (:mod:`kgworker.observe.fleet`), read at most every ``cache_seconds``; the
chapter backlog KEDA scales on from MySQL (:mod:`kgworker.observe.backlog`), read at most
every ``backlog_seconds`` and kept at its last value while MySQL cannot be read.

Names are listed once in :data:`METRICS`; the Grafana dashboard and alert rules in
``examples/deploy/monitoring`` are tested against :func:`exported_names`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kgworker.config import Settings
from kgworker.llm.adaptive import read_states as read_adaptive
from kgworker.llm.stats import LATENCY_BUCKETS, LLM_STATS, LlmStats
from kgworker.observe.fleet import ProviderState, discover_providers, read_providers
from kgworker.queue.connection import RedisClient
from kgworker.version import __version__

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from kgworker.runtime.context import NodeContext
    from kgworker.runtime.metrics import RuntimeMetrics

log = logging.getLogger(__name__)

#: name → (type, help, labels). Counter names carry no ``_total``: the client appends it.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # this node
    "kgworker_node_info": ("gauge", "Always 1; the node's name and version", ("node", "version")),
    "kgworker_node_start_time_seconds": ("gauge", "Process start, Unix time", ()),
    "kgworker_slot_limit": ("gauge", "Slots of a provider on this node", ("provider",)),
    "kgworker_in_flight": ("gauge", "Slots of this node doing work", ("provider",)),
    "kgworker_claims": ("counter", "Queue items claimed by this node", ("provider",)),
    "kgworker_completions": ("counter", "Claims acknowledged as done", ("provider",)),
    "kgworker_failures": ("counter", "Handler errors, jobs and chapters", ("provider",)),
    "kgworker_retries": ("counter", "Items put back on their queue after a failure", ("provider",)),
    "kgworker_dead_letters": ("counter", "Items this node sent to the DLQ", ("provider",)),
    "kgworker_dropped_items": (
        "counter", "Stale items acknowledged unworked (task deleted, or an old worker has it)",
        ("provider",),
    ),
    "kgworker_stalls": ("counter", "Expired claims the reaper returned", ("provider",)),
    "kgworker_rescued": ("counter", "Items swept back from the active list", ("provider",)),
    "kgworker_lease_losses": ("counter", "Claims or chapters whose lease was lost", ("provider",)),
    "kgworker_released": ("counter", "Items put back at shutdown", ("provider",)),
    "kgworker_units_done": ("counter", "Chapters finished on this node", ("provider",)),
    "kgworker_supervisor_crashes": ("counter", "Crashes of a supervised loop", ("service",)),
    "kgworker_supervisor_restarts": ("counter", "Restarts of a supervised loop", ("service",)),
    # the fleet, from Redis
    "kgworker_fleet_read_ok": ("gauge", "1 if the last Redis read for metrics worked", ()),
    "kgworker_queue_length": ("gauge", "Items waiting in kg:ai_queue:<provider>", ("provider",)),
    "kgworker_claims_held": ("gauge", "Claims held by the whole fleet", ("provider",)),
    "kgworker_open_jobs": ("gauge", "Books open for chapter claims", ("provider",)),
    "kgworker_dlq_length": ("gauge", "Items in the provider's dead-letter queue", ("provider",)),
    "kgworker_provider_suspended": ("gauge", "1 while ai:provider:suspend exists", ("provider",)),
    "kgworker_breaker_failures": ("gauge", "Consecutive failed calls (breaker)", ("provider",)),
    "kgworker_live_slots": ("gauge", "Registered slots of the fleet", ("provider",)),
    "kgworker_busy_slots": ("gauge", "Registered slots of the fleet that are busy", ("provider",)),
    "kgworker_rate_requests_used": ("gauge", "Requests in the current rate window", ("provider",)),
    "kgworker_rate_tokens_used": ("gauge", "Tokens in the current rate window", ("provider",)),
    "kgworker_rate_rpm_limit": ("gauge", "Requests per window allowed (0 = none)", ("provider",)),
    "kgworker_rate_tpm_limit": ("gauge", "Tokens per window allowed (0 = none)", ("provider",)),
    # the fleet, from MySQL (observe/backlog.py): what KEDA scales on
    "kgworker_backlog_chapters": (
        "gauge", "Chapters left of the provider's open and queued tasks, fleet-wide", ("provider",)
    ),
    "kgworker_backlog_read_ok": ("gauge", "1 if the last MySQL read of the backlog worked", ()),
    # adaptive concurrency (fleet-wide, from Redis)
    "kgworker_adaptive_enabled": ("gauge", "1 if AIMD steers the provider", ("provider",)),
    "kgworker_adaptive_target": (
        "gauge", "Fleet-wide target of LLM requests in flight", ("provider",)
    ),
    "kgworker_adaptive_in_flight": ("gauge", "Permits held by the fleet now", ("provider",)),
    "kgworker_adaptive_changes": ("counter", "Changes of the adaptive target", ("provider",)),
    "kgworker_adaptive_last_change_time_seconds": (
        "gauge", "Unix time of the last target change, by its kind", ("provider", "kind")
    ),
    # LLM calls of this node
    "kgworker_llm_request_duration_seconds": (
        "histogram",
        "Latency of provider calls, retries included",
        ("provider", "model"),
    ),
    "kgworker_llm_requests": ("counter", "Provider calls by outcome", ("provider", "outcome")),
    "kgworker_llm_tokens": ("counter", "Tokens by kind (prompt, completion)", ("provider", "kind")),
    "kgworker_llm_cost_usd": ("counter", "Cost from the configured price table", ("provider",)),
    "kgworker_llm_retries": ("counter", "Retried provider calls", ("provider",)),
    "kgworker_llm_cache_hits": ("counter", "Calls answered from the cache", ("provider",)),
    "kgworker_rate_limit_waits": ("counter", "Calls that waited for the rate limit", ("provider",)),
    "kgworker_rate_limit_wait_seconds": (
        "counter",
        "Seconds spent waiting for the rate limit",
        ("provider",),
    ),
}

#: RuntimeMetrics field → metric name.
RUNTIME_COUNTERS = {
    "claims": "kgworker_claims",
    "completions": "kgworker_completions",
    "failures": "kgworker_failures",
    "retries": "kgworker_retries",
    "dead_letters": "kgworker_dead_letters",
    "dropped": "kgworker_dropped_items",
    "stalls": "kgworker_stalls",
    "rescued": "kgworker_rescued",
    "lease_losses": "kgworker_lease_losses",
    "released": "kgworker_released",
    "units_done": "kgworker_units_done",
    "crashes": "kgworker_supervisor_crashes",
    "restarts": "kgworker_supervisor_restarts",
}


def exported_names() -> set[str]:
    """Every sample name a scrape can contain (``_total``, ``_bucket``… included)."""
    names: set[str] = set()
    for name, (kind, _, _) in METRICS.items():
        if kind == "counter":
            names.update({name + "_total", name + "_created"})
        elif kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count", name + "_created"})
        else:
            names.add(name)
    return names


def _family(name: str) -> Any:
    kind, doc, labels = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=list(labels))
    if kind == "histogram":
        return HistogramMetricFamily(name, doc, labels=list(labels))
    return GaugeMetricFamily(name, doc, labels=list(labels))


class MetricsExporter:
    """Owns the registry; :meth:`refresh` reads Redis, :meth:`render` writes the text."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient | None,
        *,
        node: NodeContext | None = None,
        runtime: RuntimeMetrics | None = None,
        llm: LlmStats = LLM_STATS,
        cache_seconds: float = 2.0,
        engine: Callable[[], AsyncEngine] | None = None,
        backlog_seconds: float = 5.0,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.node = node
        self.runtime = runtime if runtime is not None else (node.metrics if node else None)
        self.llm = llm
        self.cache_seconds = cache_seconds
        self.started_at = node.started_at if node is not None else time.time()
        self.states: list[ProviderState] = []
        self.adaptive: list[dict[str, Any]] = []
        self.read_ok = redis is not None
        self._read_at = 0.0
        #: the MySQL engine (a factory: created on first use), for the backlog
        self.engine = engine
        self.backlog_seconds = backlog_seconds
        self.backlog: dict[str, int] = {}
        self.backlog_ok = engine is not None
        self._backlog_at = float("-inf")
        self._lock = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def served(self) -> list[str]:
        """Providers this node has slots for (or is configured with)."""
        if self.node is not None:
            return sorted(self.node.pool.slots)
        return list(self.settings.kg_worker_providers)

    async def refresh(self, *, force: bool = False) -> None:
        """Re-read the fleet figures unless the last read is fresher than ``cache_seconds``."""
        if self.redis is None:
            return
        async with self._lock:
            if not force and time.monotonic() - self._read_at < self.cache_seconds:
                return
            try:
                providers = await discover_providers(self.redis, self.served())
                self.states = await read_providers(self.redis, self.settings, providers)
                self.adaptive = await read_adaptive(self.redis, self.settings, providers)
                self.read_ok = True
            except Exception as exc:  # a scrape must still answer: keep the last figures
                self.read_ok = False
                log.warning("metrics: Redis read failed: %s", exc)
            else:
                await self._refresh_backlog(providers, force)
            self._read_at = time.monotonic()

    async def _refresh_backlog(self, providers: list[str], force: bool) -> None:
        if self.engine is None or self.redis is None:
            return
        if not force and time.monotonic() - self._backlog_at < self.backlog_seconds:
            return
        from kgworker.observe.backlog import read_backlog

        self._backlog_at = time.monotonic()
        try:
            self.backlog = await read_backlog(self.redis, self.engine(), providers)
        except Exception as exc:  # keep the last numbers: a gap would read as 0 to KEDA
            if self.backlog_ok:
                log.warning("metrics: backlog not readable, keeping the last figures: %s", exc)
            self.backlog_ok = False
        else:
            self.backlog_ok = True

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        await self.refresh()
        return self.render()


class _Collector(Collector):
    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        ex = self.exporter
        yield from self._node(ex)
        yield from self._runtime(ex)
        yield from self._fleet(ex)
        yield from self._backlog(ex)
        yield from self._adaptive(ex)
        yield from self._llm(ex.llm)

    def _backlog(self, ex: MetricsExporter) -> Iterator[Metric]:
        backlog = _family("kgworker_backlog_chapters")
        for provider, chapters in sorted(ex.backlog.items()):
            backlog.add_metric([provider], chapters)
        ok = _family("kgworker_backlog_read_ok")
        if ex.engine is not None:
            ok.add_metric([], 1 if ex.backlog_ok else 0)
        yield from (backlog, ok)

    def _adaptive(self, ex: MetricsExporter) -> Iterator[Metric]:
        names = ("kgworker_adaptive_enabled", "kgworker_adaptive_target",
                 "kgworker_adaptive_in_flight", "kgworker_adaptive_changes")
        enabled, target, in_flight, changes = (_family(n) for n in names)
        last = _family("kgworker_adaptive_last_change_time_seconds")
        for a in ex.adaptive:
            enabled.add_metric([a["provider"]], 1 if a["enabled"] else 0)
            target.add_metric([a["provider"]], a["target"])
            in_flight.add_metric([a["provider"]], a["in_flight"])
            changes.add_metric([a["provider"]], a["changes"])
            if a["changed_at"] is not None:
                last.add_metric([a["provider"], a["kind"] or "?"], a["changed_at"])
        yield from (enabled, target, in_flight, changes, last)

    def _node(self, ex: MetricsExporter) -> Iterator[Metric]:
        info = _family("kgworker_node_info")
        info.add_metric([ex.settings.kg_worker_node_name, __version__], 1)
        start = _family("kgworker_node_start_time_seconds")
        start.add_metric([], ex.started_at)
        limit = _family("kgworker_slot_limit")
        if ex.node is not None:
            for provider in ex.served():
                limit.add_metric([provider], ex.node.pool.limit(provider))
        yield from (info, start, limit)

    def _runtime(self, ex: MetricsExporter) -> Iterator[Metric]:
        served = ex.served()
        snap = ex.runtime.snapshot() if ex.runtime is not None else {}
        in_flight = _family("kgworker_in_flight")
        for provider in _keys(served, snap.get("in_flight", {})):
            in_flight.add_metric([provider], snap.get("in_flight", {}).get(provider, 0))
        yield in_flight
        for field_name, name in RUNTIME_COUNTERS.items():
            values = snap.get(field_name, {})
            family = _family(name)
            keys = values if name.startswith("kgworker_supervisor") else _keys(served, values)
            for key in sorted(keys):
                family.add_metric([key], values.get(key, 0))
            yield family

    def _fleet(self, ex: MetricsExporter) -> Iterator[Metric]:
        ok = _family("kgworker_fleet_read_ok")
        ok.add_metric([], 1 if ex.read_ok else 0)
        yield ok
        columns: dict[str, Callable[[ProviderState], int]] = {
            "kgworker_queue_length": lambda s: s.queued,
            "kgworker_claims_held": lambda s: s.claimed,
            "kgworker_open_jobs": lambda s: s.open,
            "kgworker_dlq_length": lambda s: s.dead,
            "kgworker_provider_suspended": lambda s: 1 if s.suspended_until is not None else 0,
            "kgworker_breaker_failures": lambda s: s.consecutive_failures,
            "kgworker_live_slots": lambda s: s.live_slots,
            "kgworker_busy_slots": lambda s: s.busy_slots,
            "kgworker_rate_requests_used": lambda s: s.requests_used,
            "kgworker_rate_tokens_used": lambda s: s.tokens_used,
            "kgworker_rate_rpm_limit": lambda s: s.rpm_limit,
            "kgworker_rate_tpm_limit": lambda s: s.tpm_limit,
        }
        for name, value in columns.items():
            family = _family(name)
            for state in ex.states:
                family.add_metric([state.provider], value(state))
            yield family

    def _llm(self, stats: LlmStats) -> Iterator[Metric]:
        with stats._lock:
            latency = _family("kgworker_llm_request_duration_seconds")
            for (provider, model), hist in sorted(stats.latency.items()):
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    buckets.append((_bound(bound), cumulative))
                latency.add_metric([provider, model], buckets, hist.total)
            requests = _family("kgworker_llm_requests")
            for (provider, outcome), n in sorted(stats.requests.items()):
                requests.add_metric([provider, outcome], n)
            tokens = _family("kgworker_llm_tokens")
            for (provider, kind), n in sorted(stats.tokens.items()):
                tokens.add_metric([provider, kind], n)
            singles: dict[str, Mapping[str, float]] = {
                "kgworker_llm_cost_usd": stats.cost_usd,
                "kgworker_llm_retries": stats.retries,
                "kgworker_llm_cache_hits": stats.cache_hits,
                "kgworker_rate_limit_waits": stats.rate_waits,
                "kgworker_rate_limit_wait_seconds": stats.rate_wait_seconds,
            }
            families = [latency, requests, tokens]
            for name, values in singles.items():
                family = _family(name)
                for provider, value in sorted(values.items()):
                    family.add_metric([provider], value)
                families.append(family)
        yield from families


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


def _keys(served: Iterable[str], seen: dict[str, int]) -> list[str]:
    return sorted(set(served) | set(seen))
