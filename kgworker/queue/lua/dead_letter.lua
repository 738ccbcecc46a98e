-- dead_letter.lua: move a claimed item to the dead-letter queue (fenced by token).
-- Used for malformed items and PermanentJobError; the entry is built by the caller, which
-- base64-encodes raw bytes that are not UTF-8.
-- KEYS[1] claims  {kg:ai_queue:P}:claims
-- KEYS[2] leases  {kg:ai_queue:P}:leases
-- KEYS[3] stalls  {kg:ai_queue:P}:stalls
-- KEYS[4] dlq     {kg:ai_queue:P}:dlq
-- KEYS[5] open    {kg:ai_queue:P}:open
-- ARGV[1] claim id, ARGV[2] token, ARGV[3] DLQ entry (JSON {raw, reason, node, provider, at})
-- Returns 1, or 0 when the claim is gone or has another token.
--#include fenced_claim
--#include drop_claim
local claim = fenced_claim(KEYS[1], ARGV[1], ARGV[2])
if not claim then
  return 0
end
drop_claim(KEYS[1], KEYS[2], KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[3], redis.sha1hex(claim.raw))
redis.call('RPUSH', KEYS[4], ARGV[3])
return 1
