-- Replay across hash slots (Redis Cluster), step 2 of 2, on the source queue's node: the copy
-- is queued on the target (dlq_take_in.lua), so the claimed original goes.
-- KEYS: replaying
-- ARGV: base, id...
-- Returns the number of originals removed.
local base = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local mk = mkey(base, id)
    forget_task(base, id, redis.call('HGET', mk, 'task_id'))
    redis.call('DEL', mk)
    n = n + 1
  end
end
return n
