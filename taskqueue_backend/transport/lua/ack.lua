-- Acknowledge: forget a message its owner finished. A consumer that lost its lease
-- (declared dead, message returned) acks nothing: returns 0.
-- KEYS: inflight, ids
-- ARGV: base, id, consumer
local base, id, consumer = ARGV[1], ARGV[2], ARGV[3]
local mk = mkey(base, id)
local f = redis.call('HMGET', mk, 'owner', 'task_id')
if f[1] ~= consumer then
  return 0
end
redis.call('DEL', mk)
unlease(base, id, consumer)
forget_task(base, id, f[2])
return 1
