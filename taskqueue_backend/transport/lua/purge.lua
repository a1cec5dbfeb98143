-- Remove up to `limit` waiting messages (ready, and delayed unless told to keep them);
-- returns how many.
-- KEYS: ready, delayed, signal
-- ARGV: base, limit, include_delayed ('1' or '0')
local base, limit = ARGV[1], tonumber(ARGV[2])
local sets = 2
if ARGV[3] == '0' then
  sets = 1
end
local n = 0
for k = 1, sets do
  local ids = redis.call('ZRANGE', KEYS[k], 0, limit - n - 1)
  for _, id in ipairs(ids) do
    local mk = mkey(base, id)
    forget_task(base, id, redis.call('HGET', mk, 'task_id'))
    redis.call('DEL', mk)
    redis.call('ZREM', KEYS[k], id)
    n = n + 1
  end
  if n >= limit then
    return n
  end
end
redis.call('DEL', KEYS[3])
return n
