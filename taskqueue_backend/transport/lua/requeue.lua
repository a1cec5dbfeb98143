-- Return an owned in-flight message to the position it was leased from (reject with
-- requeue, or a consumer closing with unacked messages).
-- KEYS: ready, inflight, signal, state
-- ARGV: base, id, consumer
local base, id, consumer = ARGV[1], ARGV[2], ARGV[3]
local mk = mkey(base, id)
local f = redis.call('HMGET', mk, 'owner', 'rank')
if f[1] ~= consumer then
  return 0
end
unlease(base, id, consumer)
redis.call('HSET', mk, 'state', 'ready', 'owner', '')
redis.call('ZADD', KEYS[1], return_score(base, mk, tonumber(f[2])), id)
wake(base)
touch(base, nil)
return 1
