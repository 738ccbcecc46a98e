-- breaker_fail.lua: count one failed call of a provider (chaishu's breaker counter).
-- KEYS[1] fail counter  ai:provider:fail:P
-- ARGV[1] ttl seconds
-- Returns the new count of consecutive failures.
local c = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return c
