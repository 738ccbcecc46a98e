"""The AIMD rule of adaptive concurrency: one pure step from a period's figures to a target.

Kept free of I/O so the rule can be tested exhaustively and reasoned about on its own; the
Redis side (:mod:`kgworker.llm.adaptive`) only gathers :class:`PeriodStats` and stores
:class:`ControlState`.

The rule, per period:

* **Decrease** (multiplicative, ``target * decrease``) on any 429 (cut at once in Redis by
  the first 429, recorded here) or timeout, and on latency
  growth (the period's mean latency above ``floor * (1 + tolerance)``, the floor being the
  best period mean of the last ``floor_periods``). The level that overloaded the provider is
  remembered as the *ceiling*. The next period is skipped: its errors come from requests sent
  before the cut.
* **Increase** by one only while demand exceeded the target (some caller waited for a
  permit) and every call of the period went well. Below the ceiling this is once per period;
  the step onto the ceiling waits ``PROBE_PERIODS`` — a provider whose capacity was just
  found is probed rarely, which is what keeps 429s to a trickle once converged; a probe that
  passes forgets the ceiling (the capacity grew), and increases go at full pace again.
* Always clamped to ``[min, max]`` and to what the RPM/TPM limits can use (Little's law:
  requests in flight = rate x latency; more only queue in the limiter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Periods between two probes above a known ceiling.
PROBE_PERIODS = 6
#: Calls a period needs before its mean latency is trusted.
MIN_LATENCY_SAMPLES = 3


@dataclass(frozen=True)
class PeriodStats:
    """What the fleet's calls did during one period (summed over every node)."""

    ok: int = 0
    throttled: int = 0  #: 429 answers
    timeouts: int = 0
    errors: int = 0  #: 5xx and transport errors (counted, not acted on: the breaker's job)
    latency_ms_sum: float = 0.0  #: over ``ok`` calls
    tokens: int = 0  #: over ``ok`` calls
    denied: int = 0  #: permit requests refused because the target was reached
    peak: int = 0  #: most permits held at once

    @property
    def calls(self) -> int:
        return self.ok + self.throttled + self.timeouts + self.errors

    @property
    def mean_latency_ms(self) -> float | None:
        if self.ok < MIN_LATENCY_SAMPLES:
            return None
        return self.latency_ms_sum / self.ok


@dataclass(frozen=True)
class Tuning:
    """Bounds and constants of the rule (from settings, see ``KG_ADAPTIVE_*``)."""

    minimum: int = 1
    maximum: int = 64
    decrease: float = 0.85
    tolerance: float = 1.0
    floor_periods: int = 30
    period_seconds: float = 2.0
    rate_per_second: float = 0.0  #: RPM limit / window, 0 = none
    tokens_per_second: float = 0.0  #: TPM limit / window, 0 = none


@dataclass
class ControlState:
    """The fleet's shared controller state (one Redis hash per provider)."""

    target: int
    latencies: list[float] = field(default_factory=list)  #: recent period means, ms
    ceiling: int = 0  #: target at the last overload (0 = none yet)
    hold: int = 0  #: periods to skip after a decrease
    since_change: int = 0
    avg_tokens: float = 0.0  #: tokens per call, smoothed

    @property
    def floor_ms(self) -> float | None:
        return min(self.latencies) if self.latencies else None


@dataclass(frozen=True)
class Change:
    old: int
    new: int
    kind: str  #: increase, decrease_429/_timeout/_latency, bound, enabled, disabled, reset
    reason: str


def rate_cap(state: ControlState, tuning: Tuning) -> int | None:
    """Most requests in flight the RPM/TPM limits can keep busy (None = unbounded)."""
    floor = state.floor_ms
    if floor is None:
        return None
    rates = [tuning.rate_per_second] if tuning.rate_per_second > 0 else []
    if tuning.tokens_per_second > 0 and state.avg_tokens > 0:
        rates.append(tuning.tokens_per_second / state.avg_tokens)
    if not rates:
        return None
    return max(tuning.minimum, math.ceil(min(rates) * floor / 1000 * 1.5) + 1)


def step(
    state: ControlState, stats: PeriodStats, tuning: Tuning, *, cut_from: int | None = None
) -> Change | None:
    """Advance ``state`` by one period; the change of target, if any.

    ``cut_from``: a 429 already cut the target from this value during the period (done in
    Redis at once, see ``queue/lua/permit_release.lua``); the step only records it.
    """
    mean = stats.mean_latency_ms
    if mean is not None:
        state.latencies = [*state.latencies, mean][-tuning.floor_periods :]
    if stats.ok:
        per_call = stats.tokens / stats.ok
        old_avg = state.avg_tokens
        state.avg_tokens = per_call if not old_avg else 0.8 * old_avg + 0.2 * per_call
    state.since_change += 1
    if cut_from is not None:
        state.ceiling, state.hold, state.since_change = cut_from, 1, 0
        why = f"{stats.throttled} x 429 in {stats.calls} calls"
        return Change(cut_from, state.target, "decrease_429", why)
    old = state.target
    upper = tuning.maximum
    cap = rate_cap(state, tuning)
    if cap is not None:
        upper = min(upper, cap)
    if state.hold > 0:
        state.hold -= 1
        return _apply(state, min(old, upper), "bound", _bound_reason(upper, cap))
    floor = state.floor_ms
    overloaded = stats.throttled or stats.timeouts
    slow = mean is not None and floor is not None and mean > floor * (1 + tuning.tolerance)
    if overloaded or slow:
        base = min(old, stats.peak) if stats.peak else old
        new = max(tuning.minimum, min(math.floor(base * tuning.decrease), old - 1))
        state.ceiling = old
        state.hold = 1
        if stats.throttled:
            kind, why = "decrease_429", f"{stats.throttled} x 429"
        elif stats.timeouts:
            kind, why = "decrease_timeout", f"{stats.timeouts} timeouts"
        else:
            kind, why = "decrease_latency", f"latency {mean:.0f} ms > floor {floor:.0f} ms"
        return _apply(state, min(new, upper), kind, f"{why} in {stats.calls} calls")
    if stats.denied and stats.ok and not stats.errors and old < upper:
        probing = state.ceiling and old + 1 >= state.ceiling
        if probing and state.since_change < PROBE_PERIODS:
            return None
        if probing:  # past the old ceiling without trouble: probe at full pace again
            state.ceiling = 0
        latency = f", latency {mean:.0f} ms" if mean is not None else ""
        return _apply(state, old + 1, "increase", f"{stats.ok} calls ok{latency}, demand waiting")
    return _apply(state, min(old, upper), "bound", _bound_reason(upper, cap))


def _bound_reason(upper: int, cap: int | None) -> str:
    if cap is not None and cap == upper:
        return f"RPM/TPM limits keep at most {upper} busy"
    return f"bounded by KG_ADAPTIVE_MAX={upper}"


def _apply(state: ControlState, new: int, kind: str, reason: str) -> Change | None:
    if new == state.target:
        return None
    change = Change(state.target, new, kind, reason)
    state.target = new
    state.since_change = 0
    return change
