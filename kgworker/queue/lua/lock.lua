-- lock.lua: take, extend or release a fleet-wide lock, fenced by a token: the one lock of
-- the reaper, the fleet duties and the adaptive controllers. A taker may name the current
-- holder's token that it judged dead (queue/locks.py reads the holder's beats): the lock
-- is then taken over at once, unless it changed hands meanwhile.
-- KEYS[1] lock key: kgw:lock:reaper:P, kgw:lock:pipeline-duties, {kgw:llm:P}:aimd:lock
-- ARGV[1] token, ARGV[2] ttl ms, ARGV[3] "1" to take/extend, "0" to release,
-- ARGV[4] (optional) the token of a holder judged dead, to take the lock over from
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
if not holder or (ARGV[4] and ARGV[4] ~= '' and holder == ARGV[4]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
