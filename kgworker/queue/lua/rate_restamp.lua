-- rate_restamp.lua: move an admitted request to the time it was actually sent (never
-- earlier), if it is still in the logs: the provider counts arrivals, not admissions.
-- KEYS[1] rpm  {kgw:llm:P}:rpm
-- KEYS[2] tpm  {kgw:llm:P}:tpm
-- ARGV[1] rpm member "id", ARGV[2] tpm member "id|tokens"
-- Returns the server time used (ms).
--#include now_ms
local now = now_ms()
redis.call('ZADD', KEYS[1], 'XX', 'GT', now, ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', 'GT', now, ARGV[2])
return now
