"""Flow control shared by every node: per-provider RPM/TPM limits, 429 cool-down, breaker.

Limits are sliding-window logs in Redis (a sorted set of admission times per provider), so
"N per window" holds over *any* window, not only aligned minutes, and all nodes share one
budget. The clock is Redis ``TIME``: node clocks may disagree, Redis has one. Every script
touches only keys with the provider's hash tag (``{kgw:llm:NAME}:...``), so it runs on
Redis Cluster too. A request is logged when admitted and re-stamped once its body is on the
wire, so a slow connect or a stalled event loop cannot move its arrival into a later window
than its stamp; a small margin on the window absorbs the remaining transit time. The
provider counts arrivals, and so its count stays under the limit.

Each node also remembers its own admissions of the current window (their ids, Redis-clock
stamps and token weights, as the scripts return them) and the 429 cool-downs it set. When
Redis restarts empty the windows would start from zero and the fleet could send a whole
second window's worth at once; :meth:`RateLimiter.reseed` adds every node's remembered
admissions back under the same ids, so the windows hold what they held.

The breaker keeps chaishu's keys (docs/chaishu-compat.md §2): ``ai:provider:fail:{name}`` counts
consecutive failed calls (JSON int, 24 h TTL), ``ai:provider:suspend:{name}`` holds
``{"until": epoch}`` while the provider is paused. Those two keys live in different slots,
so each is changed by its own single-key command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from kgworker.config import Settings
from kgworker.config.specs import ProviderLimit, parse_limits
from kgworker.keys import LlmKeys, fail_key, suspend_key
from kgworker.llm.stats import LLM_STATS
from kgworker.queue import scripts, switches
from kgworker.queue.connection import RedisClient

log = logging.getLogger(__name__)

#: Added to the window (at least this, or 1 % of it) so the delay between admission and the
#: request reaching the provider cannot push a window over its limit.
TRANSIT_MARGIN_MS = 250
FAIL_TTL_SECONDS = 24 * 3600
#: Admissions one node remembers per provider: more than any provider's RPM limit we know
#: of, since a node's share of one window is at most the whole limit. Beyond it the oldest
#: are forgotten (after a loss the window would restart that much lower).
MAX_REMEMBERED = 20_000
#: Admissions per re-seed call: keeps each script call short on a busy Redis.
RESEED_BATCH = 500

@dataclass(frozen=True)
class Permit:
    """An admitted request; ``reconcile`` corrects its token weight after the answer."""

    provider: str
    member: str
    tokens: int


class RateLimiter:
    """Cluster-wide admission per provider. Unlimited providers still honour cool-downs."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._redis = redis
        self._limits = parse_limits(settings.kg_provider_limits)
        self._window_ms = int(settings.kg_rate_window_seconds * 1000)
        self._cooldown_default = settings.kg_rate_cooldown_seconds
        #: provider → member → [Redis ms of admission (or sending), tokens]: this node's
        #: admissions of the current window, for :meth:`reseed`.
        self._admitted: dict[str, OrderedDict[str, list[int]]] = {}
        #: provider → Redis ms until which a cool-down this node set lasts.
        self._cooldowns: dict[str, int] = {}

    @property
    def window_ms(self) -> int:
        """The window the scripts use: the configured one plus the transit margin."""
        return self._window_ms + max(TRANSIT_MARGIN_MS, self._window_ms // 100)

    def limit_for(self, provider: str) -> ProviderLimit:
        key = provider.lower()
        return self._limits.get(key) or self._limits.get("*") or ProviderLimit()

    async def acquire(self, provider: str, tokens: int) -> Permit:
        """Wait until the provider may take one more request of about ``tokens`` tokens."""
        limit = self.limit_for(provider)
        k = LlmKeys.for_provider(provider)
        member = uuid.uuid4().hex
        keys = [k.rpm, k.tpm, k.cooldown]
        window = self.window_ms
        started = time.monotonic()
        while True:
            wait, now = await scripts.run(
                self._redis, "rate_acquire", keys, [limit.rpm, limit.tpm, window, tokens, member]
            )
            wait_ms = int(wait)
            if wait_ms <= 0:
                waited = time.monotonic() - started
                if waited > 0.001:
                    LLM_STATS.record_rate_wait(provider, waited)
                if limit.rpm > 0 or limit.tpm > 0:
                    self._remember(provider, member, int(now), tokens)
                return Permit(provider, member, tokens)
            # A few ms of jitter so waiting slots do not all retry in the same instant.
            await asyncio.sleep(wait_ms / 1000 + random.uniform(0, 0.02))

    async def sent(self, permit: Permit) -> None:
        """The request is on the wire now: count it from now, not from its admission.

        Admission and sending are apart by the connect time and any event-loop stall; the
        provider counts arrivals, so a request stamped at admission could land in the next
        window. Re-stamping at send time keeps every window of arrivals under the limit.
        """
        limit = self.limit_for(permit.provider)
        if limit.rpm <= 0 and limit.tpm <= 0:
            return
        k = LlmKeys.for_provider(permit.provider)
        now = await scripts.run(self._redis, "rate_restamp", [k.rpm, k.tpm],
                                [permit.member, f"{permit.member}|{permit.tokens}"])
        entry = self._entry(permit)
        if entry is not None:
            entry[0] = max(entry[0], int(now))

    async def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        if self.limit_for(permit.provider).tpm <= 0 or actual_tokens == permit.tokens:
            return
        moved = await scripts.run(
            self._redis, "rate_reconcile", [LlmKeys.for_provider(permit.provider).tpm],
            [f"{permit.member}|{permit.tokens}", f"{permit.member}|{actual_tokens}"],
        )
        entry = self._entry(permit)
        if entry is not None and int(moved):
            entry[1] = actual_tokens

    async def cool_down(self, provider: str, seconds: float | None) -> None:
        """Slow the whole provider (every node) after a 429."""
        pause = self._cooldown_default if seconds is None else seconds
        if pause <= 0:
            return
        until = int(await scripts.run(
            self._redis, "rate_cooldown", [LlmKeys.for_provider(provider).cooldown],
            [int(pause * 1000)]))
        key = provider.lower()
        self._cooldowns[key] = max(self._cooldowns.get(key, 0), until)
        log.warning(
            "provider cooling down for %.1fs after 429", pause, extra={"provider": provider}
        )


    def remembered(self, provider: str) -> dict[str, tuple[int, int]]:
        """This node's admissions of the current window: member → (Redis ms, tokens)."""
        return {m: (at, tokens) for m, (at, tokens) in self._admitted.get(provider.lower(),
                                                                           {}).items()}

    def _entry(self, permit: Permit) -> list[int] | None:
        admitted = self._admitted.get(permit.provider.lower())
        return None if admitted is None else admitted.get(permit.member)

    def _remember(self, provider: str, member: str, now: int, tokens: int) -> None:
        admitted = self._admitted.setdefault(provider.lower(), OrderedDict())
        admitted[member] = [now, tokens]
        horizon = now - self.window_ms
        while admitted:
            oldest = next(iter(admitted.values()))
            if oldest[0] > horizon and len(admitted) <= MAX_REMEMBERED:
                break
            admitted.popitem(last=False)

    async def reseed(self) -> tuple[int, int]:
        """Re-add this node's admissions and cool-downs to emptied windows.

        Members keep their ids (``ZADD NX``), so calling it again, or on a Redis that lost
        nothing, adds nothing. Returns (admissions re-added, cool-downs restored).
        """
        added = restored = 0
        for provider in sorted(set(self._admitted) | set(self._cooldowns)):
            limit = self.limit_for(provider)
            k = LlmKeys.for_provider(provider)
            entries = list(self._admitted.get(provider, {}).items())
            until = self._cooldowns.get(provider, 0)
            for start in range(0, max(len(entries), 1), RESEED_BATCH):
                args: list[str | int] = [limit.rpm, limit.tpm, self.window_ms, until]
                for member, (at, tokens) in entries[start:start + RESEED_BATCH]:
                    args += [member, at, tokens]
                n, cooled = await scripts.run(self._redis, "rate_reseed",
                                              [k.rpm, k.tpm, k.cooldown], args)
                added += int(n)
                restored += int(cooled)
                until = 0  # the cool-down goes with the first batch only
        return added, restored


class Breaker:
    """chaishu's breaker: ``threshold`` consecutive failed calls suspend the provider."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._redis = redis
        self.threshold = settings.kg_breaker_threshold
        self.suspend_seconds = settings.kg_breaker_suspend_seconds

    async def suspended_until(self, name: str) -> float | None:
        """Epoch seconds the suspension ends, or ``None`` when the provider is not paused."""
        raw = await self._redis.get(suspend_key(name))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            return float(value["until"])
        except (ValueError, TypeError, KeyError):
            return float("inf")  # the key existing is what pauses; its content is advisory

    async def record_failure(self, name: str) -> bool:
        """Count one failed call; returns True when this failure suspended the provider."""
        count = int(await scripts.run(self._redis, "breaker_fail", [fail_key(name)],
                                      [FAIL_TTL_SECONDS]))
        if count < self.threshold:
            return False
        await switches.suspend(self._redis, name, self.suspend_seconds)
        log.error(
            "provider suspended for %ss after %d consecutive failures",
            self.suspend_seconds,
            count,
            extra={"provider": name},
        )
        return True

    async def record_success(self, name: str) -> None:
        await self._redis.delete(fail_key(name))
