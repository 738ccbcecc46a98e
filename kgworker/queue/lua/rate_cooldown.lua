-- rate_cooldown.lua: pause a whole provider (every node) after a 429; extends, never
-- shortens, a cool-down already in place.
-- KEYS[1] cooldown  {kgw:llm:P}:cooldown
-- ARGV[1] milliseconds
-- Returns the ms epoch the cool-down asked for ends.
--#include now_ms
local untl = now_ms() + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then redis.call('SET', KEYS[1], untl, 'PX', tonumber(ARGV[1])) end
return untl
