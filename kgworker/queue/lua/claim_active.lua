-- claim_active.lua: claim an item that BLMOVE just moved from the queue into active.
-- KEYS[1] active  {kg:ai_queue:P}:active (list)
-- KEYS[2] claims  {kg:ai_queue:P}:claims
-- KEYS[3] leases  {kg:ai_queue:P}:leases
-- KEYS[4] stalls  {kg:ai_queue:P}:stalls
-- ARGV[1] raw item, ARGV[2] claim id, ARGV[3] token, ARGV[4] node name, ARGV[5] lease ms,
-- ARGV[6] owner (as in claim.lua)
-- Returns the item's attempts so far, or -1 when the item is no longer in active (the
-- reaper returned it to the queue because this node took too long: do not work it).
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return -1
end
--#include now_ms
local now = now_ms()
redis.call('HSET', KEYS[2], ARGV[2],
  cjson.encode({raw = ARGV[1], token = ARGV[3], node = ARGV[4], owner = ARGV[6],
    claimed_at = now}))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[2])
return tonumber(redis.call('HGET', KEYS[4], redis.sha1hex(ARGV[1])) or 0)
