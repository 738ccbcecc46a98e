-- liveness_read.lua: the last beats of some owners, with the server's clock (one round trip;
-- a pipelined TIME is refused on a Redis Cluster).
-- KEYS[1] liveness  kgw:liveness (zset owner -> ms last seen, 0 = stopped)
-- ARGV owners (node name + run id)
-- Returns {now ms, then per owner its last beat in ms, or -1 when it never beat}.
--#include now_ms
local out = {now_ms()}
for _, score in ipairs(redis.call('ZMSCORE', KEYS[1], unpack(ARGV))) do
  out[#out + 1] = score and tonumber(score) or -1
end
return out
