-- Pause a queue: consumers lease nothing from it until it is resumed; publishing goes on.
-- The flag is durable broker state (the queue's state hash), seen by every consumer. A queue
-- nobody has used yet can be paused ahead of its first message (the caller lists it).
-- KEYS: state
-- ARGV: now_ms, actor, reason
-- Returns 1 if this call paused it, 0 if it was paused already.
if redis.call('HGET', KEYS[1], 'paused') == '1' then
  return 0
end
redis.call('HSET', KEYS[1], 'paused', '1', 'paused_at', ARGV[1], 'paused_by', ARGV[2],
           'paused_reason', ARGV[3])
return 1
