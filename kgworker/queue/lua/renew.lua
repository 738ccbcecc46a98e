-- renew.lua: extend the leases of every claim one node holds on one provider.
-- KEYS[1] claims  {kg:ai_queue:P}:claims
-- KEYS[2] leases  {kg:ai_queue:P}:leases
-- ARGV[1] lease ms, then pairs: ARGV[2k] claim id, ARGV[2k+1] token
-- Returns the ids whose claim is gone or has another token (lost: cancel that work).
--#include now_ms
--#include fenced_claim
local expiry = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if fenced_claim(KEYS[1], id, ARGV[i + 1]) then
    redis.call('ZADD', KEYS[2], expiry, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
