-- permit_renew.lua: extend the leases of the permits one node still holds.
-- KEYS[1] permits  {kgw:llm:P}:permits
-- ARGV[1] lease ms, ARGV[2..] permit ids
-- Returns how many were extended (an expired permit is not brought back).
--#include now_ms
local now = now_ms()
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
return n
