-- Delete a queue: its waiting and in-flight messages and its bookkeeping. Dead letters
-- stay where an operator can see them. Returns how many messages went.
-- KEYS: ready, delayed, inflight, ids, signal, state
-- ARGV: base
local base = ARGV[1]
local n = 0
for k = 1, 3 do
  for _, id in ipairs(redis.call('ZRANGE', KEYS[k], 0, -1)) do
    local mk = mkey(base, id)
    local f = redis.call('HMGET', mk, 'task_id', 'owner')
    forget_task(base, id, f[1])
    if f[2] and f[2] ~= '' then
      redis.call('DEL', heldkey(base, f[2]))
    end
    redis.call('DEL', mk)
    n = n + 1
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6])
if redis.call('ZCARD', base .. ':dead') == 0 then
  redis.call('DEL', KEYS[4])
else
  -- the dead letters stay: so do their counts by reason (kept in the state hash)
  for _, id in ipairs(redis.call('ZRANGE', base .. ':dead', 0, -1)) do
    count_dead(base, redis.call('HGET', mkey(base, id), 'reason'), 1)
  end
end
return n
