-- Resume a paused queue and wake its consumers if it holds messages.
-- KEYS: ready, delayed, signal, state
-- ARGV: base
-- Returns 1 if this call resumed it, 0 if it was not paused.
local base = ARGV[1]
if redis.call('HGET', KEYS[4], 'paused') ~= '1' then
  return 0
end
redis.call('HDEL', KEYS[4], 'paused', 'paused_at', 'paused_by', 'paused_reason')
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[2]) > 0 then
  wake(base)
end
return 1
