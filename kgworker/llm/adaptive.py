"""Adaptive concurrency: the fleet's LLM requests in flight to a provider, steered by AIMD.

Why a fleet-wide permit around each call, and not steering the slot limits: a slot holds a
*chapter*, and a chapter makes a varying number of calls (chunks, the three-call flow,
re-asks) with MySQL and Neo4j work between them, so slots only bound requests loosely and
per node; ten nodes steering their own slots would each probe the provider. A permit is
exactly one request on the wire, counted once for the whole fleet. It is a member of a
sorted set scored by its lease end (Redis clock), taken and returned by Lua scripts that
touch only keys tagged ``{kgw:llm:NAME}`` (one Cluster slot, like the rate limiter); a node
renews its permits while their calls run, so a killed node's permits expire on their own.
In ``auto`` mode every node's slot limit is its hard cap (``KG_MAX_PROCESSES_PER_PROVIDER``),
so the permit is what binds.

One controller per provider for the whole fleet: every node using the provider runs the
loop, but only the holder of ``{kgw:llm:NAME}:aimd:lock`` steps it, once per
``KG_ADAPTIVE_PERIOD``, from figures all nodes add to one stats hash as their calls end.
The rule itself is :mod:`kgworker.llm.aimd`. Keys are listed in ``docs/redis-keys.md``.

After Redis loses its data, renewal puts back the permits of calls still in flight (a
renewal is a ``ZADD`` that restores a missing member, and a permit is returned only after
any renewal naming it has finished), and :meth:`AdaptiveGate.reseed` restarts a vanished
target at ``KG_ADAPTIVE_INITIAL``: the level a new provider starts from, low enough for any
provider, from which the controller climbs again (one step per period while demand waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict
from typing import Any

from kgworker.config import Settings
from kgworker.config.specs import parse_limits
from kgworker.keys import PROVIDER_SLOTS_KEY, LlmKeys
from kgworker.llm import aimd
from kgworker.llm.errors import CallErrorKind, LLMCallError
from kgworker.queue import scripts
from kgworker.queue.connection import RedisClient

log = logging.getLogger(__name__)

AUTO = "auto"
HISTORY_LENGTH = 50
ENABLED_TTL = 1.0  #: seconds a node trusts its reading of "is this provider adaptive"
POLL_MIN, POLL_MAX = 0.005, 0.05  #: seconds between retries of a refused permit

def configured(settings: Settings) -> frozenset[str]:
    """Providers made adaptive by ``KG_ADAPTIVE_PROVIDERS``."""
    names = settings.kg_adaptive_providers.split(",")
    return frozenset(p.strip().lower() for p in names if p.strip())


def tuning(settings: Settings, provider: str) -> aimd.Tuning:
    try:
        limits = parse_limits(settings.kg_provider_limits)
    except ValueError:
        limits = {}
    limit = limits.get(provider.lower()) or limits.get("*")
    window = settings.kg_rate_window_seconds
    return aimd.Tuning(
        minimum=settings.kg_adaptive_min,
        maximum=max(settings.kg_adaptive_min, settings.kg_adaptive_max),
        decrease=settings.kg_adaptive_decrease,
        tolerance=settings.kg_adaptive_latency_tolerance,
        floor_periods=settings.kg_adaptive_floor_periods,
        period_seconds=settings.kg_adaptive_period,
        rate_per_second=(limit.rpm / window) if limit and limit.rpm else 0.0,
        tokens_per_second=(limit.tpm / window) if limit and limit.tpm else 0.0,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def record_change(redis: RedisClient, provider: str, change: aimd.Change) -> None:
    """Store a target change as the state's last change and at the head of the history."""
    keys = LlmKeys.for_provider(provider)
    now = time.time()
    entry = json.dumps({"at": round(now, 3), **asdict(change)}, ensure_ascii=False)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(keys.aimd, mapping={"target": change.new, "reason": change.reason,
                                   "kind": change.kind, "changed_at": now})
    pipe.hincrby(keys.aimd, "changes", 1)
    pipe.lpush(keys.aimd_history, entry)
    pipe.ltrim(keys.aimd_history, 0, HISTORY_LENGTH - 1)
    await pipe.execute()


async def set_mode(redis: RedisClient, settings: Settings, provider: str, on: bool) -> int:
    """Operator switch (``provider scale NAME auto`` / ``N``); returns the current target."""
    keys = LlmKeys.for_provider(provider)
    raw = await redis.hget(keys.aimd, "target")
    target = int(_text(raw)) if raw is not None else settings.kg_adaptive_initial
    kind, reason = ("enabled", "operator: scale auto") if on else ("disabled", "operator: fixed")
    await record_change(redis, provider, aimd.Change(target, target, kind, reason))
    return target


class CallPermit:
    """One request's permit; the caller sets ``tokens`` after a successful answer."""

    __slots__ = ("id", "provider", "started", "tokens")

    def __init__(self, provider: str) -> None:
        self.id = uuid.uuid4().hex
        self.provider = provider
        self.started = time.monotonic()
        self.tokens = 0


class AdaptiveGate:
    """Per node: takes and returns permits, renews them, and runs the fleet's controller."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.configured = configured(settings)
        self.lease_ms = int(settings.kg_adaptive_permit_lease * 1000)
        self._enabled: dict[str, tuple[float, bool]] = {}
        self._pollers: dict[str, asyncio.Lock] = {}
        self._freed: dict[str, asyncio.Event] = {}
        self._held: dict[str, CallPermit] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._token = secrets.token_hex(8)
        self._closed = False
        self._renewed = asyncio.Event()  #: clear while a renewal is in flight
        self._renewed.set()

    # --- is the provider adaptive? --------------------------------------------------------
    def enabled_cached(self, provider: str) -> bool:
        key = provider.lower()
        return key in self.configured or self._enabled.get(key, (0.0, False))[1]

    async def enabled(self, provider: str) -> bool:
        key = provider.lower()
        if key in self.configured:
            return True
        read_at, on = self._enabled.get(key, (0.0, False))
        if time.monotonic() - read_at >= ENABLED_TTL:
            on = _text(await self.redis.hget(PROVIDER_SLOTS_KEY, key) or "") == AUTO
            self._enabled[key] = (time.monotonic(), on)
        return on

    # --- permits --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def call(self, provider: str) -> AsyncIterator[CallPermit | None]:
        """Hold a permit for one request (None: the provider is not adaptive)."""
        if not await self.enabled(provider):
            yield None
            return
        permit = await self._take(provider.lower())
        outcome = "other"
        try:
            yield permit
            outcome = "ok"
        except LLMCallError as exc:
            outcome = _OUTCOMES.get(exc.kind, "other")
            raise
        except BaseException:
            outcome = "cancelled"
            raise
        finally:
            await self._give_back(permit, outcome)

    async def _take(self, provider: str) -> CallPermit:
        self._start_loops(provider)
        keys = LlmKeys.for_provider(provider)
        poller = self._pollers.setdefault(provider, asyncio.Lock())
        freed = self._freed.setdefault(provider, asyncio.Event())
        permit = CallPermit(provider)
        async with poller:  # one coroutine per node asks Redis; the others queue here (FIFO)
            delay = POLL_MIN
            while True:
                freed.clear()
                args = [permit.id, self.lease_ms, self.settings.kg_adaptive_initial]
                if int(await scripts.run(self.redis, "permit_acquire",
                                         [keys.permits, keys.aimd, keys.aimd_stats], args)):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(freed.wait(), delay)
                delay = min(delay * 2, POLL_MAX)
        permit.started = time.monotonic()
        self._held[permit.id] = permit
        return permit

    async def _give_back(self, permit: CallPermit, outcome: str) -> None:
        self._held.pop(permit.id, None)
        # a renewal already on its way may name this permit: let it land first, or it would
        # put the returned permit back (until its lease ran out, which also bounds the wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._renewed.wait(), self.lease_ms / 1000)
        keys = LlmKeys.for_provider(permit.provider)
        latency = (time.monotonic() - permit.started) * 1000
        s = self.settings
        args = [permit.id, outcome, f"{latency:.1f}", permit.tokens, s.kg_adaptive_initial,
                s.kg_adaptive_min, s.kg_adaptive_decrease, int(s.kg_adaptive_period * 2000)]
        try:
            await scripts.run(self.redis, "permit_release",
                              [keys.permits, keys.aimd_stats, keys.aimd], args)
        except Exception as exc:  # the lease ends it anyway
            log.warning("permit not returned (%s): it expires with its lease", exc,
                        extra={"provider": permit.provider})
        freed = self._freed.get(permit.provider)
        if freed is not None:
            freed.set()

    # --- background: renewal and the controller -------------------------------------------
    def _start_loops(self, provider: str) -> None:
        if self._closed:
            return
        if "__renew__" not in self._tasks:
            self._tasks["__renew__"] = asyncio.create_task(self._renew_loop(), name="permit-renew")
        if provider not in self._tasks:
            self._tasks[provider] = asyncio.create_task(
                self._control_loop(provider), name=f"aimd:{provider}"
            )

    async def _renew_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(Exception):
                await self._renew()

    async def _renew(self) -> int:
        """Extend every held permit's lease, putting back vanished ones; returns those.

        Every provider is tried (on a Cluster one master may be down while the others are
        not); the first error is raised afterwards.
        """
        while not self._renewed.is_set():  # one renewal at a time
            await self._renewed.wait()
        self._renewed.clear()
        restored = 0
        error: Exception | None = None
        try:
            by_provider: dict[str, list[str]] = {}
            for permit in list(self._held.values()):
                by_provider.setdefault(permit.provider, []).append(permit.id)
            for provider, ids in by_provider.items():
                keys = LlmKeys.for_provider(provider)
                try:
                    restored += int(await scripts.run(self.redis, "permit_renew",
                                                      [keys.permits], [self.lease_ms, *ids]))
                except Exception as exc:
                    error = error or exc
        finally:
            self._renewed.set()
        if restored:
            log.warning("%d adaptive permits of calls in flight were missing: put back",
                        restored)
        if error is not None:
            raise error
        return restored

    async def reseed(self) -> tuple[int, list[str]]:
        """After Redis lost its data: permits in flight back, vanished targets at initial.

        Returns (permits put back, providers whose target restarted). Idempotent.
        """
        restored = await self._renew()
        restarted: list[str] = []
        providers = {p.provider for p in self._held.values()}
        providers |= {p for p in self._tasks if p != "__renew__"} | set(self.configured)
        initial = self.settings.kg_adaptive_initial
        for provider in sorted(providers):
            if not self.enabled_cached(provider):
                continue
            keys = LlmKeys.for_provider(provider)
            if int(await self.redis.hsetnx(keys.aimd, "target", initial)):
                reason = f"Redis lost its data: restarted at KG_ADAPTIVE_INITIAL ({initial})"
                await record_change(self.redis, provider,
                                    aimd.Change(initial, initial, "reset", reason))
                restarted.append(provider)
        return restored, restarted

    async def _control_loop(self, provider: str) -> None:
        period = self.settings.kg_adaptive_period
        keys = LlmKeys.for_provider(provider)
        ttl_ms = int(max(period * 3, 1.0) * 1000)
        next_step = time.monotonic() + period
        while not self._closed:
            await asyncio.sleep(max(0.0, next_step - time.monotonic()))
            next_step += period
            try:
                if await self.enabled(provider) and int(
                    await scripts.run(self.redis, "lock", [keys.aimd_lock],
                                      [self._token, ttl_ms, "1"])
                ):
                    await self.control_step(provider)
            except Exception:
                log.exception("adaptive control step failed", extra={"provider": provider})
            next_step = max(next_step, time.monotonic())  # never catch up in a burst

    async def control_step(self, provider: str) -> aimd.Change | None:
        """Collect the fleet's period figures, apply the rule, store state and history."""
        keys = LlmKeys.for_provider(provider)
        held, flat = await scripts.run(self.redis, "aimd_collect",
                                       [keys.permits, keys.aimd_stats], [])
        raw = dict(zip(map(_text, flat[::2]), map(_text, flat[1::2]), strict=True))

        def count(name: str) -> int:
            return int(raw.get(name, 0))

        stats = aimd.PeriodStats(
            ok=count("ok"), throttled=count("throttled"), timeouts=count("timeouts"),
            errors=count("errors"), latency_ms_sum=float(raw.get("latency_ms_sum", 0.0)),
            tokens=count("tokens"), denied=count("denied"), peak=count("peak"),
        )
        raw_state = {_text(k): _text(v) for k, v in (await self.redis.hgetall(keys.aimd)).items()}
        state = _load_state(raw_state, self.settings)
        cut_from = int(raw_state["cut_from"]) if "cut_from" in raw_state else None
        if cut_from is not None:
            await self.redis.hdel(keys.aimd, "cut_from")
        change = aimd.step(state, stats, tuning(self.settings, provider), cut_from=cut_from)
        await self.redis.hset(keys.aimd, mapping={
            "target": state.target, "latencies": json.dumps([round(x, 1) for x in state.latencies]),
            "ceiling": state.ceiling, "hold": state.hold, "since_change": state.since_change,
            "avg_tokens": round(state.avg_tokens, 1), "in_flight": int(held),
        })
        if change is not None:
            await record_change(self.redis, provider, change)
            log.info("adaptive target %d → %d: %s", change.old, change.new, change.reason,
                     extra={"provider": provider})
        return change

    async def aclose(self) -> None:
        """Stop the loops (a client library that swallows a cancel cannot hold us up)."""
        self._closed = True
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)


_OUTCOMES = {
    CallErrorKind.RATE_LIMITED: "throttled",
    CallErrorKind.TIMEOUT: "timeouts",
    CallErrorKind.SERVER: "errors",
    CallErrorKind.CONNECTION: "errors",
}


def _load_state(values: dict[str, str], settings: Settings) -> aimd.ControlState:
    return aimd.ControlState(
        target=int(values.get("target", settings.kg_adaptive_initial)),
        latencies=[float(x) for x in json.loads(values.get("latencies", "[]"))],
        ceiling=int(values.get("ceiling", 0)),
        hold=int(values.get("hold", 0)),
        since_change=int(values.get("since_change", 0)),
        avg_tokens=float(values.get("avg_tokens", 0.0)),
    )


async def read_states(
    redis: RedisClient, settings: Settings, providers: Iterable[str]
) -> list[dict[str, Any]]:
    """Status view: per adaptive provider its target, permits in flight, last change, history."""
    names = list(dict.fromkeys(p.lower() for p in [*providers, *configured(settings)]))
    if not names:
        return []
    slots = await redis.hgetall(PROVIDER_SLOTS_KEY)
    modes = {_text(k).lower(): _text(v) for k, v in slots.items()}
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    pipe = redis.pipeline(transaction=False)
    for name in names:
        keys = LlmKeys.for_provider(name)
        pipe.hgetall(keys.aimd)
        pipe.zcount(keys.permits, now_ms, "+inf")
        pipe.lrange(keys.aimd_history, 0, HISTORY_LENGTH - 1)
    results = await pipe.execute()
    states: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        raw, in_flight, history = results[3 * i : 3 * i + 3]
        mode = "off"
        if name in configured(settings):
            mode = "config"
        elif modes.get(name) == AUTO:
            mode = AUTO
        if not raw and mode == "off":
            continue
        values = {_text(k): _text(v) for k, v in raw.items()}
        latencies = json.loads(values.get("latencies", "[]"))
        states.append({
            "provider": name,
            "mode": mode,
            "enabled": mode != "off",
            "target": int(values.get("target", settings.kg_adaptive_initial)),
            "in_flight": int(in_flight),
            "reason": values.get("reason"),
            "kind": values.get("kind"),
            "changed_at": float(values["changed_at"]) if "changed_at" in values else None,
            "changes": int(values.get("changes", 0)),
            "floor_ms": min(latencies) if latencies else None,
            "ceiling": int(values.get("ceiling", 0)) or None,
            "min": settings.kg_adaptive_min,
            "max": settings.kg_adaptive_max,
            "history": [json.loads(_text(h)) for h in history],
        })
    return states
