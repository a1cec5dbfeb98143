-- Remove a waiting (ready or delayed) message by Celery task id: a durable revoke. A message
-- in flight is left to its worker and reported with its owner; a dead letter is left to the
-- dead-letter tools and reported as such.
-- KEYS: ready, delayed, dead, ids
-- ARGV: base, task_id
-- Returns {'removed', state} | {'inflight', owner} | {'dead', ''} | {'missing', ''}
local base, task_id = ARGV[1], ARGV[2]
local id = redis.call('HGET', KEYS[4], task_id)
if not id then
  return {'missing', ''}
end
local mk = mkey(base, id)
local f = redis.call('HMGET', mk, 'state', 'owner')
if f[1] == 'inflight' then
  return {'inflight', f[2]}
end
if f[1] == 'dead' or f[1] == 'replaying' then
  return {'dead', ''}
end
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('DEL', mk)
redis.call('HDEL', KEYS[4], task_id)
return {'removed', f[1] or ''}
