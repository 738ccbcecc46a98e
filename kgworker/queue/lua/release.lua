-- release.lua: put a claimed item back at the head of its queue now (fenced by token).
-- Used at shutdown (no attempt counted) and after a failed attempt (counted: an item that
-- failed more than max_stalls times goes to the DLQ instead of looping).
-- KEYS[1] queue   kg:ai_queue:P
-- KEYS[2] claims  {kg:ai_queue:P}:claims
-- KEYS[3] leases  {kg:ai_queue:P}:leases
-- KEYS[4] stalls  {kg:ai_queue:P}:stalls
-- KEYS[5] dlq     {kg:ai_queue:P}:dlq
-- KEYS[6] open    {kg:ai_queue:P}:open
-- ARGV[1] claim id, ARGV[2] token, ARGV[3] "1" to count an attempt, ARGV[4] max stalls,
-- ARGV[5] node name, ARGV[6] provider, ARGV[7] reason (for the DLQ entry)
-- Returns 1 requeued, 2 dead-lettered, 0 claim gone or token mismatch.
--#include now_ms
--#include fenced_claim
--#include drop_claim
local claim = fenced_claim(KEYS[2], ARGV[1], ARGV[2])
if not claim then
  return 0
end
drop_claim(KEYS[2], KEYS[3], KEYS[6], ARGV[1])
if ARGV[3] == '1' then
  local sha = redis.sha1hex(claim.raw)
  local n = redis.call('HINCRBY', KEYS[4], sha, 1)
  if n > tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[4], sha)
    redis.call('RPUSH', KEYS[5], cjson.encode({
      raw = claim.raw, reason = ARGV[7] .. ' (' .. n .. ' attempts)', node = ARGV[5],
      provider = ARGV[6], at = math.floor(now_ms() / 1000)}))
    return 2
  end
end
redis.call('LPUSH', KEYS[1], claim.raw)
return 1
