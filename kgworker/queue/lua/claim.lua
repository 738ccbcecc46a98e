-- claim.lua: pop up to N items from the head of a provider queue and claim each one.
-- The fast path: while the queue has items, one round trip claims a batch (no BLMOVE).
-- KEYS[1] queue   kg:ai_queue:P (list, producers RPUSH)
-- KEYS[2] claims  {kg:ai_queue:P}:claims (hash claim id -> JSON {raw, token, node, owner,
--                 claimed_at}; owner = node name + run id, whose beats the reaper reads)
-- KEYS[3] leases  {kg:ai_queue:P}:leases (zset claim id -> lease expiry, ms)
-- KEYS[4] stalls  {kg:ai_queue:P}:stalls (hash sha1(raw) -> attempts)
-- ARGV[1] count (max items), ARGV[2] claim id prefix (random per call; ids are prefix:i),
-- ARGV[3] token, ARGV[4] node name, ARGV[5] lease ms, ARGV[6] owner ("": none, the lease
-- alone decides)
-- Returns a flat array: id, raw, attempts, id, raw, attempts, ... (empty: queue empty)
--#include now_ms
local now = now_ms()
local items = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
local out = {}
if not items then
  return out
end
local expiry = now + tonumber(ARGV[5])
for i, raw in ipairs(items) do
  local id = ARGV[2] .. ':' .. i
  redis.call('HSET', KEYS[2], id,
    cjson.encode({raw = raw, token = ARGV[3], node = ARGV[4], owner = ARGV[6],
      claimed_at = now}))
  redis.call('ZADD', KEYS[3], expiry, id)
  local attempts = redis.call('HGET', KEYS[4], redis.sha1hex(raw))
  out[#out + 1] = id
  out[#out + 1] = raw
  out[#out + 1] = tonumber(attempts or 0)
end
return out
