-- Replay claimed dead letters: each goes to the tail of its priority in the target queue
-- (the original queue, or another one under the same prefix), body unchanged unless a new
-- body is given (a new expiry the operator set). The poison count starts over; deliveries
-- keep counting; 'replays' counts the replays.
-- KEYS: replaying, target ready, target signal, target state, target ids
-- ARGV: base, target_base, now_ms, then per message: id, body ('' = unchanged),
--       expire_at_ms ('' = unchanged, 0 = never)
-- Returns the number of messages released.
local base, target, now = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for i = 4, #ARGV, 3 do
  local id, body, expire_at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local mk = mkey(base, id)
    local f = redis.call('HMGET', mk, 'rank', 'task_id')
    if f[1] then
      local tk = mkey(target, id)
      if target ~= base then
        redis.call('RENAME', mk, tk)
        forget_task(base, id, f[2])
      end
      requeue_replayed(target, tk, id, tonumber(f[1]), f[2], now, base, body, expire_at, KEYS[5])
      n = n + 1
    end
  end
end
if n > 0 then
  wake(target)
end
touch(target, nil)
return n
