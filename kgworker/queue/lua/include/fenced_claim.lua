-- include/fenced_claim.lua: a claim, only for the holder of its token (fencing).
-- Returns the decoded claim {raw, token, node, owner, claimed_at}, or nil when the claim is gone
-- or carries another token (its lease was lost: someone else may hold the item now).
local function fenced_claim(claims_key, claim_id, token)
  local encoded = redis.call('HGET', claims_key, claim_id)
  if not encoded then
    return nil
  end
  local claim = cjson.decode(encoded)
  if claim.token ~= token then
    return nil
  end
  return claim
end
