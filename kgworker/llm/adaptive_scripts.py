"""The Redis side of adaptive concurrency: key names and the Lua scripts that move permits.

Every key of a provider carries the rate limiter's hash tag ``{kgw:llm:NAME}``, so each
script runs in one Cluster slot; times come from Redis ``TIME`` (one clock for the fleet).
Used by :mod:`kgworker.llm.adaptive`; the keys are listed in ``docs/redis-keys.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

# KEYS: 1 permits (zset id → lease end ms), 2 state (hash), 3 stats (hash)
# ARGV: 1 permit id, 2 lease ms, 3 target when the state has none yet
# Returns the permits held after admission (> 0), or 0 when the target is reached.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local target = tonumber(redis.call('HGET', KEYS[2], 'target') or ARGV[3])
local held = redis.call('ZCARD', KEYS[1])
if held >= target then
  redis.call('HINCRBY', KEYS[3], 'denied', 1)
  redis.call('PEXPIRE', KEYS[3], 600000)
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
held = held + 1
if held > tonumber(redis.call('HGET', KEYS[3], 'peak') or '0') then
  redis.call('HSET', KEYS[3], 'peak', held)
end
return held
"""

# KEYS: 1 permits, 2 stats, 3 state. ARGV: 1 permit id, 2 outcome, 3 latency ms, 4 tokens,
# 5 target when the state has none, 6 minimum, 7 decrease factor, 8 hold ms.
# A 429 cuts the target at once (multiplicatively, once per hold window): an answer that
# fast frees its permit for the next caller, so waiting for the period would let a burst
# of 429s through. The controller records the cut (``cut_from``) at its next step.
# Returns the permits removed (0 when it had expired).
RELEASE_LUA = """
local gone = redis.call('ZREM', KEYS[1], ARGV[1])
local outcome = ARGV[2]
if outcome == 'throttled' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now >= tonumber(redis.call('HGET', KEYS[3], 'cut_until') or '0') then
    local target = tonumber(redis.call('HGET', KEYS[3], 'target') or ARGV[5])
    local cut = math.min(math.floor(target * tonumber(ARGV[7])), target - 1)
    local new = math.max(tonumber(ARGV[6]), cut)
    if not redis.call('HGET', KEYS[3], 'cut_from') then
      redis.call('HSET', KEYS[3], 'cut_from', target)
    end
    redis.call('HSET', KEYS[3], 'target', new, 'cut_until', now + tonumber(ARGV[8]))
  end
end
if outcome == 'ok' or outcome == 'throttled' or outcome == 'timeouts' or outcome == 'errors' then
  redis.call('HINCRBY', KEYS[2], outcome, 1)
  if outcome == 'ok' then
    redis.call('HINCRBYFLOAT', KEYS[2], 'latency_ms_sum', ARGV[3])
    redis.call('HINCRBY', KEYS[2], 'tokens', ARGV[4])
  end
  redis.call('PEXPIRE', KEYS[2], 600000)
end
return gone
"""

# KEYS: 1 permits. ARGV: 1 lease ms, 2... permit ids. Extends the ones still held.
RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
return n
"""

# KEYS: 1 permits, 2 stats. Returns {permits held, flat stats} and resets the stats.
COLLECT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local stats = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
return {redis.call('ZCARD', KEYS[1]), stats}
"""

# KEYS: 1 lock. ARGV: 1 token, 2 ttl ms. 1 when the caller holds it (taken or extended).
LOCK_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class AdaptiveKeys:
    permits: str
    state: str
    stats: str
    history: str
    lock: str

    @classmethod
    def for_provider(cls, provider: str) -> AdaptiveKeys:
        tag = f"{{kgw:llm:{provider.lower()}}}"  # the rate limiter's tag: same Cluster slot
        return cls(f"{tag}:permits", f"{tag}:aimd", f"{tag}:aimd:stats",
                   f"{tag}:aimd:history", f"{tag}:aimd:lock")
