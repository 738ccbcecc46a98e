-- include/now_ms.lua: the Redis server's clock in milliseconds (one clock for the fleet).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
