-- rate_reconcile.lua: re-weight an admitted request with the tokens it really used.
-- KEYS[1] tpm  {kgw:llm:P}:tpm
-- ARGV[1] old member "id|estimate", ARGV[2] new member "id|actual"
-- Returns 1 when the member was still in the window (moved at the same time), else 0.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[1], score, ARGV[2])
end
return score and 1 or 0
