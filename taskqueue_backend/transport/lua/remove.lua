-- Remove a waiting message by Celery task id (a durable revoke). A message in flight
-- is left to its worker and reported with its owner.
-- KEYS: ready, delayed, dead, ids
-- ARGV: base, task_id
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
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('DEL', mk)
redis.call('HDEL', KEYS[4], task_id)
return {'removed', f[1] or ''}
