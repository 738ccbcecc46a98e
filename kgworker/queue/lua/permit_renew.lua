-- permit_renew.lua: extend the leases of the permits one node holds, putting back any that
-- vanished (Redis lost its data, or a lease ran out while its call still ran): a request on
-- the wire counts, whatever Redis remembers. The node returns a permit only after a renewal
-- naming it has landed, so a returned permit never comes back.
-- KEYS[1] permits  {kgw:llm:P}:permits
-- ARGV[1] lease ms, ARGV[2..] permit ids
-- Returns how many were put back (0 when every permit was still there).
--#include now_ms
local now = now_ms()
local lease = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], lease * 2) end
return n
