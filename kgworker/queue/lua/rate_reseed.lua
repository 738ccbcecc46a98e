-- rate_reseed.lua: after Redis lost its data, re-add one node's admissions of the current
-- window (and the cool-down it set) so the fleet's windows hold what they held and the next
-- window cannot burst above the provider's limit. Same member ids (ZADD NX): calling it
-- twice, or on a Redis that lost nothing, adds nothing.
-- KEYS[1] rpm       {kgw:llm:P}:rpm
-- KEYS[2] tpm       {kgw:llm:P}:tpm
-- KEYS[3] cooldown  {kgw:llm:P}:cooldown
-- ARGV[1] rpm limit (0 = none), ARGV[2] tpm limit (0 = none), ARGV[3] window ms,
-- ARGV[4] ms epoch the node's cool-down ends (0 = none),
-- ARGV[5..] triples: member id, admission ms, tokens
-- Returns {admissions re-added, 1 when the cool-down was restored else 0}.
--#include now_ms
local now = now_ms()
local rpm, tpm, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local added = 0
for i = 5, #ARGV, 3 do
  local at = tonumber(ARGV[i + 1])
  if at > now - window then
    local new = 0
    if rpm > 0 then new = redis.call('ZADD', KEYS[1], 'NX', at, ARGV[i]) end
    if tpm > 0 then
      local t = redis.call('ZADD', KEYS[2], 'NX', at, ARGV[i] .. '|' .. ARGV[i + 2])
      if rpm <= 0 then new = t end
    end
    added = added + new
  end
end
if added > 0 then
  if rpm > 0 then redis.call('PEXPIRE', KEYS[1], window * 2) end
  if tpm > 0 then redis.call('PEXPIRE', KEYS[2], window * 2) end
end
local cooled = 0
local untl = tonumber(ARGV[4])
if untl > now and untl > tonumber(redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], untl, 'PX', untl - now)
  cooled = 1
end
return {added, cooled}
