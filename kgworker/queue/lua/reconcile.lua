-- reconcile.lua: push back the items of tasks that are nowhere in a provider's queue state.
-- Race-free against every claim path: claim.lua, BLMOVE and claim_active.lua move an item
-- between these keys atomically, so a task being claimed is always in one of them.
-- KEYS[1] queue   kg:ai_queue:P
-- KEYS[2] active  {kg:ai_queue:P}:active
-- KEYS[3] claims  {kg:ai_queue:P}:claims
-- KEYS[4] open    {kg:ai_queue:P}:open
-- ARGV[1] "1" to push the items of missing tasks, "0" only to name them; then pairs:
-- ARGV[2k] task id, ARGV[2k+1] the item to push when that task is missing
-- Returns the task ids missing (pushed, with "1").
local present = {}
local function mark(raw)
  local ok, item = pcall(cjson.decode, raw)
  if ok and type(item) == 'table' and item.task_id ~= nil then
    present[tostring(item.task_id)] = true
  end
end
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do mark(raw) end
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do mark(raw) end
for _, encoded in ipairs(redis.call('HVALS', KEYS[3])) do
  local ok, claim = pcall(cjson.decode, encoded)
  if ok and type(claim) == 'table' and claim.raw then mark(claim.raw) end
end
for _, encoded in ipairs(redis.call('HVALS', KEYS[4])) do mark(encoded) end
local missing = {}
for i = 2, #ARGV, 2 do
  if not present[ARGV[i]] then
    if ARGV[1] == '1' then
      redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    end
    present[ARGV[i]] = true
    missing[#missing + 1] = ARGV[i]
  end
end
return missing
