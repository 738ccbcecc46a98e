-- open.lua: list a claimed job as open, so every node serving the provider helps with it.
-- KEYS[1] claims  {kg:ai_queue:P}:claims
-- KEYS[2] open    {kg:ai_queue:P}:open (hash claim id -> JSON {raw, node, task_id, attempts})
-- ARGV[1] claim id, ARGV[2] token, ARGV[3] entry JSON
-- Returns 1, or 0 when the claim is gone or has another token. The entry is removed with
-- the claim (ack, release, dead_letter, reap).
--#include fenced_claim
if not fenced_claim(KEYS[1], ARGV[1], ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
