-- permit_acquire.lua: take one adaptive permit (an LLM request in flight, fleet-wide).
-- KEYS[1] permits  {kgw:llm:P}:permits (zset permit id -> lease end ms)
-- KEYS[2] state    {kgw:llm:P}:aimd (hash: target, ...)
-- KEYS[3] stats    {kgw:llm:P}:aimd:stats (hash: the period's figures)
-- ARGV[1] permit id, ARGV[2] lease ms, ARGV[3] target when the state has none yet
-- Returns the permits held after admission (> 0), or 0 when the target is reached.
--#include now_ms
local now = now_ms()
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
