-- liveness_beat.lua: a node run says it is alive (every second), on the server's clock.
-- KEYS[1] liveness  kgw:liveness (zset owner -> ms last seen)
-- ARGV[1] owner (node name + run id), ARGV[2] "1" alive, "0" stopped (marks it long gone),
-- ARGV[3] ms after which entries are forgotten (old runs)
-- Returns the server time in ms.
--#include now_ms
local now = now_ms()
redis.call('ZADD', KEYS[1], ARGV[2] == '1' and now or 0, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], 1, now - tonumber(ARGV[3]))
return now
