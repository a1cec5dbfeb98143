-- Delete dead letters for good (only entries that are dead letters right now).
-- KEYS: dead
-- ARGV: base, id...
-- Returns {id, task_id, ...} of the entries deleted.
local base = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local mk = mkey(base, id)
    local task_id = redis.call('HGET', mk, 'task_id') or ''
    count_dead(base, redis.call('HGET', mk, 'reason'), -1)
    forget_task(base, id, task_id)
    redis.call('DEL', mk)
    out[#out + 1] = id
    out[#out + 1] = task_id
  end
end
return out
