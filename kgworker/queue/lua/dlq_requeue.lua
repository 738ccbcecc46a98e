-- dlq_requeue.lua: put one exact dead-letter entry back on its queue, once: two operators
-- requeueing the same entry cannot push it twice.
-- KEYS[1] dlq    {kg:ai_queue:P}:dlq
-- KEYS[2] queue  kg:ai_queue:P (same hash slot)
-- ARGV[1] the exact DLQ entry, ARGV[2] the raw item
-- Returns the queue length after the push, or -1 when the entry was no longer there.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  return redis.call('RPUSH', KEYS[2], ARGV[2])
end
return -1
