-- lock.lua: take or extend a fleet-wide lock (the reaper's), fenced by a token.
-- KEYS[1] lock key, e.g. kgw:lock:reaper:P
-- ARGV[1] token, ARGV[2] ttl ms, ARGV[3] "1" to take/extend, "0" to release
-- Returns 1 when this token holds the lock afterwards (or released it), else 0.
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == '0' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
