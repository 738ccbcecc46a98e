-- reap.lua: return expired claims, and the claims of owners judged dead, to the head of
-- the queue; dead-letter poison items; rescue items stranded in active (a node died
-- between BLMOVE and claim_active.lua).
-- KEYS[1] queue        kg:ai_queue:P
-- KEYS[2] active       {kg:ai_queue:P}:active
-- KEYS[3] active_seen  {kg:ai_queue:P}:active_seen (hash raw -> ms first seen: the mark)
-- KEYS[4] claims       {kg:ai_queue:P}:claims
-- KEYS[5] leases       {kg:ai_queue:P}:leases
-- KEYS[6] stalls       {kg:ai_queue:P}:stalls
-- KEYS[7] dlq          {kg:ai_queue:P}:dlq
-- KEYS[8] open         {kg:ai_queue:P}:open
-- ARGV[1] max stalls, ARGV[2] node name, ARGV[3] provider, ARGV[4] active grace ms
-- (an item marked in active this long ago is swept back), ARGV[5] max claims per call,
-- then pairs: ARGV[6+2k] claim id, ARGV[7+2k] its owner, judged dead from its beats (the
-- liveness zset is in another slot, so the caller reads it); a pair whose claim is gone
-- or now has another owner is skipped.
-- Returns {requeued, dead-lettered, rescued from active, of the first two: taken from
-- dead owners before their lease ran out}.
--#include now_ms
local now = now_ms()
local max_stalls = tonumber(ARGV[1])
local requeued, dead, rescued, early = 0, 0, 0, 0
local taken = {}  -- claims to give back: {id, claim, claimed_at}
local seen = {}
local function take(id, claim)
  if not seen[id] then
    seen[id] = true
    taken[#taken + 1] = {id = id, claim = claim, at = tonumber(claim.claimed_at) or 0,
                         k = #taken}
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0,
    tonumber(ARGV[5]))) do
  local encoded = redis.call('HGET', KEYS[4], id)
  if encoded then
    take(id, cjson.decode(encoded))
  else  -- a lease without its claim: forget it
    redis.call('ZREM', KEYS[5], id)
    redis.call('HDEL', KEYS[8], id)
  end
end
for i = 6, #ARGV - 1, 2 do
  local id = ARGV[i]
  local encoded = redis.call('HGET', KEYS[4], id)
  if encoded and not seen[id] then
    local claim = cjson.decode(encoded)
    if claim.owner == ARGV[i + 1] and claim.owner ~= '' then
      take(id, claim)
      early = early + 1
    end
  end
end
-- newest first, so that LPUSH leaves the oldest claim at the head of the queue
table.sort(taken, function(a, b)
  if a.at ~= b.at then return a.at > b.at end
  return a.k > b.k
end)
for _, item in ipairs(taken) do
  local id, raw = item.id, item.claim.raw
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[8], id)
  local sha = redis.sha1hex(raw)
  local n = redis.call('HINCRBY', KEYS[6], sha, 1)
  if n > max_stalls then
    redis.call('HDEL', KEYS[6], sha)
    redis.call('RPUSH', KEYS[7], cjson.encode({
      raw = raw, reason = 'stalled ' .. n .. ' times', node = ARGV[2],
      provider = ARGV[3], at = math.floor(now / 1000)}))
    dead = dead + 1
  else
    redis.call('LPUSH', KEYS[1], raw)
    requeued = requeued + 1
  end
end
-- mark/sweep of active: an item seen there on an earlier pass, grace ms ago, is stranded
local grace = tonumber(ARGV[4])
local present = {}
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local first = redis.call('HGET', KEYS[3], raw)
  if first and now - tonumber(first) >= grace then
    redis.call('LREM', KEYS[2], 1, raw)
    redis.call('LPUSH', KEYS[1], raw)
    rescued = rescued + 1
  else
    if not first then
      redis.call('HSET', KEYS[3], raw, now)
    end
    present[raw] = true
  end
end
for _, raw in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not present[raw] then
    redis.call('HDEL', KEYS[3], raw)
  end
end
return {requeued, dead, rescued, early}
