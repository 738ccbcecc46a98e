-- ack.lua: the job is finished: forget the claim (fenced by its token).
-- KEYS[1] claims  {kg:ai_queue:P}:claims
-- KEYS[2] leases  {kg:ai_queue:P}:leases
-- KEYS[3] stalls  {kg:ai_queue:P}:stalls
-- KEYS[4] open    {kg:ai_queue:P}:open
-- ARGV[1] claim id, ARGV[2] token
-- Returns 1, or 0 when the claim is gone or has another token (the lease was lost).
--#include fenced_claim
--#include drop_claim
local claim = fenced_claim(KEYS[1], ARGV[1], ARGV[2])
if not claim then
  return 0
end
drop_claim(KEYS[1], KEYS[2], KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[3], redis.sha1hex(claim.raw))
return 1
