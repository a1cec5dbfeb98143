-- Claim dead letters for a replay: each moves from the dead letters to the queue's
-- replaying set, so two replayers racing on one entry claim it once. Claims older than
-- stale_ms (a replayer that died between claim and release) go back to the dead letters.
-- KEYS: dead, replaying
-- ARGV: base, now_ms, stale_ms, id...
-- Returns {id, task_id, ...} of the entries this call claimed.
local base, now = ARGV[1], tonumber(ARGV[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))) do
  redis.call('ZREM', KEYS[2], id)
  local mk = mkey(base, id)
  if redis.call('EXISTS', mk) == 1 then
    redis.call('HSET', mk, 'state', 'dead')
    redis.call('ZADD', KEYS[1], redis.call('HGET', mk, 'dead_at') or now, id)
    count_dead(base, redis.call('HGET', mk, 'reason'), 1)
  end
end
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local mk = mkey(base, id)
    redis.call('HSET', mk, 'state', 'replaying')
    redis.call('ZADD', KEYS[2], now, id)
    count_dead(base, redis.call('HGET', mk, 'reason'), -1)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', mk, 'task_id') or ''
  end
end
return out
