-- aimd_collect.lua: read and reset the period's figures for the adaptive controller.
-- KEYS[1] permits  {kgw:llm:P}:permits
-- KEYS[2] stats    {kgw:llm:P}:aimd:stats
-- ARGV none
-- Returns {permits held now, flat stats hash}; the stats hash is deleted.
--#include now_ms
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
local stats = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
return {redis.call('ZCARD', KEYS[1]), stats}
