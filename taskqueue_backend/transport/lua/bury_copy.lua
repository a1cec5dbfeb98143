-- Keep a copy of a leased message as a dead letter, byte for byte: a late-acknowledged task
-- that failed for good (its worker acknowledges the original afterwards). The task id then
-- points at the copy. Returns 0 if the message is no longer there or not in flight.
-- KEYS: dead, ids
-- ARGV: base, id, copy_id, now_ms, reason, detail, worker, exc_type, exc_message, traceback
local base, id, copy, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mk = mkey(base, id)
local f = redis.call('HMGET', mk, 'state', 'body', 'task_id', 'priority', 'rank', 'deliveries',
                     'recoveries', 'published_at', 'replays')
if f[1] ~= 'inflight' or not f[2] then
  return 0
end
local ck = mkey(base, copy)
redis.call('HSET', ck, 'body', f[2], 'task_id', f[3] or '', 'priority', f[4] or '',
           'rank', f[5] or 0, 'deliveries', f[6] or 1, 'recoveries', f[7] or 0, 'expire_at', 0,
           'published_at', f[8] or now, 'worker', ARGV[7], 'exc_type', ARGV[8],
           'exc_message', ARGV[9], 'traceback', ARGV[10], 'copied_from', id,
           'replays', f[9] or 0)
bury(base, copy, ARGV[5], ARGV[6], now)
if f[3] and f[3] ~= '' then
  redis.call('HSET', KEYS[2], f[3], copy)
end
touch(base, ck)
return 1
