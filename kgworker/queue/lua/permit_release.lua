-- permit_release.lua: return an adaptive permit and add the call's outcome to the period.
-- A 429 cuts the target at once (multiplicatively, once per hold window): an answer that
-- fast frees its permit for the next caller, so waiting for the period would let a burst
-- of 429s through. The controller records the cut (cut_from) at its next step.
-- KEYS[1] permits  {kgw:llm:P}:permits
-- KEYS[2] stats    {kgw:llm:P}:aimd:stats
-- KEYS[3] state    {kgw:llm:P}:aimd
-- ARGV[1] permit id, ARGV[2] outcome (ok|throttled|timeouts|errors|other|cancelled),
-- ARGV[3] latency ms, ARGV[4] tokens, ARGV[5] target when the state has none,
-- ARGV[6] minimum target, ARGV[7] decrease factor, ARGV[8] hold ms
-- Returns the permits removed (0 when it had expired).
--#include now_ms
local gone = redis.call('ZREM', KEYS[1], ARGV[1])
local outcome = ARGV[2]
if outcome == 'throttled' then
  local now = now_ms()
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
