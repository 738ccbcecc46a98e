-- renew.lua: extend the leases of every claim one node holds on one provider.
-- KEYS[1] claims  {kg:ai_queue:P}:claims
-- KEYS[2] leases  {kg:ai_queue:P}:leases
-- ARGV[1] lease ms, then pairs: ARGV[2k] claim id, ARGV[2k+1] token
-- Returns the ids whose claim is gone or has another token (lost: cancel that work).
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local encoded = redis.call('HGET', KEYS[1], id)
  if encoded and cjson.decode(encoded).token == ARGV[i + 1] then
    redis.call('ZADD', KEYS[2], expiry, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
