-- rate_acquire.lua: admit one LLM request under the provider's fleet-wide RPM/TPM windows.
-- Sliding-window logs: "N per window" holds over any window, not only aligned minutes.
-- KEYS[1] rpm       {kgw:llm:P}:rpm (zset request id -> admission ms)
-- KEYS[2] tpm       {kgw:llm:P}:tpm (zset "id|tokens" -> admission ms)
-- KEYS[3] cooldown  {kgw:llm:P}:cooldown (ms epoch)
-- ARGV[1] rpm limit (0 = none), ARGV[2] tpm limit (0 = none), ARGV[3] window ms,
-- ARGV[4] tokens of this request, ARGV[5] member id
-- Returns {0, server ms} when admitted (recorded in both logs at that time, which the node
-- remembers to re-seed the logs if Redis loses them), else {milliseconds to wait, server ms}.
--#include now_ms
local now = now_ms()
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, tokens, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local cool = tonumber(redis.call('GET', KEYS[3]) or '0')
if cool > now then return {cool - now, now} end
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
if wait > 0 then return {wait, now} end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], window * 2)
end
if tpm > 0 then
  redis.call('ZADD', KEYS[2], now, member .. '|' .. tokens)
  redis.call('PEXPIRE', KEYS[2], window * 2)
end
return {0, now}
