"""Flow control shared by every node: per-provider RPM/TPM limits, 429 cool-down, breaker.

Limits are sliding-window logs in Redis (a sorted set of admission times per provider), so
"N per window" holds over *any* window, not only aligned minutes, and all nodes share one
budget. The clock is Redis ``TIME``: node clocks may disagree, Redis has one. Every script
touches only keys with the provider's hash tag (``{kgw:llm:NAME}:...``), so it runs on
Redis Cluster too. A request is logged when admitted and re-stamped once its body is on the
wire, so a slow connect or a stalled event loop cannot move its arrival into a later window
than its stamp; a small margin on the window absorbs the remaining transit time. The
provider counts arrivals, and so its count stays under the limit.

The breaker keeps chaishu's keys (contract section 2): ``ai:provider:fail:{name}`` counts
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
from dataclasses import dataclass
from typing import Any

from kgworker.config import Settings
from kgworker.queue.connection import RedisClient

log = logging.getLogger(__name__)

#: Added to the window (at least this, or 1 % of it) so the delay between admission and the
#: request reaching the provider cannot push a window over its limit.
TRANSIT_MARGIN_MS = 250
FAIL_TTL_SECONDS = 24 * 3600
#: A manual pause without a length stays until ``resume``; its "until" is this far away.
INDEFINITE_SECONDS = 10 * 365 * 24 * 3600

# KEYS: 1 rpm log (zset), 2 tpm log (zset, member "id|tokens"), 3 cool-down (ms epoch)
# ARGV: 1 rpm limit, 2 tpm limit (0 = none), 3 window ms, 4 tokens, 5 member id
# Returns 0 when admitted (recorded in both logs), else milliseconds to wait.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, tokens, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local cool = tonumber(redis.call('GET', KEYS[3]) or '0')
if cool > now then return cool - now end
local wait = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    wait = tonumber(oldest[2]) + window - now + 1
  end
end
if tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local used = 0
  for i = 1, #entries, 2 do used = used + tonumber(string.match(entries[i], '|(%d+)$')) end
  if used > 0 and used + tokens > tpm then
    local freed, w = 0, 0
    for i = 1, #entries, 2 do
      freed = freed + tonumber(string.match(entries[i], '|(%d+)$'))
      w = tonumber(entries[i + 1]) + window - now + 1
      if used - freed + tokens <= tpm then break end
    end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], window * 2)
end
if tpm > 0 then
  redis.call('ZADD', KEYS[2], now, member .. '|' .. tokens)
  redis.call('PEXPIRE', KEYS[2], window * 2)
end
return 0
"""

# KEYS: 1 tpm log. ARGV: 1 old member, 2 new member. Re-weights a reservation, same time.
RECONCILE_LUA = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[1], score, ARGV[2])
end
return score and 1 or 0
"""

# KEYS: 1 rpm log, 2 tpm log. ARGV: 1 rpm member, 2 tpm member. Moves an admitted request
# to the time it was actually sent (never earlier), if it is still in the logs.
RESTAMP_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', 'GT', now, ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', 'GT', now, ARGV[2])
return now
"""

# KEYS: 1 cool-down. ARGV: 1 milliseconds. Extends (never shortens) the provider's pause.
COOLDOWN_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then redis.call('SET', KEYS[1], untl, 'PX', tonumber(ARGV[1])) end
return untl
"""

# KEYS: 1 fail counter. ARGV: 1 ttl seconds. Returns the new count.
FAIL_LUA = """
local c = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return c
"""


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


def _tag(provider: str) -> str:
    return f"{{kgw:llm:{provider.lower()}}}"


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
        self._acquire: Any = redis.register_script(ACQUIRE_LUA)
        self._reconcile: Any = redis.register_script(RECONCILE_LUA)
        self._cooldown: Any = redis.register_script(COOLDOWN_LUA)
        self._restamp: Any = redis.register_script(RESTAMP_LUA)

    def limit_for(self, provider: str) -> ProviderLimit:
        key = provider.lower()
        return self._limits.get(key) or self._limits.get("*") or ProviderLimit()

    async def acquire(self, provider: str, tokens: int) -> Permit:
        """Wait until the provider may take one more request of about ``tokens`` tokens."""
        limit = self.limit_for(provider)
        tag = _tag(provider)
        member = uuid.uuid4().hex
        keys = [f"{tag}:rpm", f"{tag}:tpm", f"{tag}:cooldown"]
        window = self._window_ms + max(TRANSIT_MARGIN_MS, self._window_ms // 100)
        while True:
            wait_ms = int(
                await self._acquire(keys=keys, args=[limit.rpm, limit.tpm, window, tokens, member])
            )
            if wait_ms <= 0:
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
        tag = _tag(permit.provider)
        await self._restamp(
            keys=[f"{tag}:rpm", f"{tag}:tpm"],
            args=[permit.member, f"{permit.member}|{permit.tokens}"],
        )

    async def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        if self.limit_for(permit.provider).tpm <= 0 or actual_tokens == permit.tokens:
            return
        key = f"{_tag(permit.provider)}:tpm"
        await self._reconcile(
            keys=[key],
            args=[f"{permit.member}|{permit.tokens}", f"{permit.member}|{actual_tokens}"],
        )

    async def cool_down(self, provider: str, seconds: float | None) -> None:
        """Slow the whole provider (every node) after a 429."""
        pause = self._cooldown_default if seconds is None else seconds
        if pause <= 0:
            return
        await self._cooldown(keys=[f"{_tag(provider)}:cooldown"], args=[int(pause * 1000)])
        log.warning(
            "provider cooling down for %.1fs after 429", pause, extra={"provider": provider}
        )


def fail_key(name: str) -> str:
    return f"ai:provider:fail:{name}"


def suspend_key(name: str) -> str:
    return f"ai:provider:suspend:{name}"


class Breaker:
    """chaishu's breaker: ``threshold`` consecutive failed calls suspend the provider."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._redis = redis
        self.threshold = settings.kg_breaker_threshold
        self.suspend_seconds = settings.kg_breaker_suspend_seconds
        self._fail: Any = redis.register_script(FAIL_LUA)

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
        count = int(await self._fail(keys=[fail_key(name)], args=[FAIL_TTL_SECONDS]))
        if count < self.threshold:
            return False
        await _suspend(self._redis, name, self.suspend_seconds)
        log.error(
            "provider suspended for %ss after %d consecutive failures",
            self.suspend_seconds,
            count,
            extra={"provider": name},
        )
        return True

    async def record_success(self, name: str) -> None:
        await self._redis.delete(fail_key(name))


async def _suspend(redis: RedisClient, name: str, seconds: int | None) -> None:
    length = INDEFINITE_SECONDS if seconds is None else seconds
    value = json.dumps({"until": int(time.time()) + length})
    await redis.set(suspend_key(name), value, ex=seconds)


async def pause(redis: RedisClient, name: str, seconds: int | None = None) -> None:
    """Operator pause (``kgworker provider pause NAME``); without ``seconds`` until resumed."""
    await _suspend(redis, name, seconds)


async def resume(redis: RedisClient, name: str) -> None:
    """Lift a pause or a breaker suspension and forget failures and cool-downs."""
    await redis.delete(suspend_key(name))
    await redis.delete(fail_key(name))
    await redis.delete(f"{_tag(name)}:cooldown")
