-- include/drop_claim.lua: forget a claim everywhere the queue state holds it.
local function drop_claim(claims_key, leases_key, open_key, claim_id)
  redis.call('HDEL', claims_key, claim_id)
  redis.call('ZREM', leases_key, claim_id)
  redis.call('HDEL', open_key, claim_id)
end
