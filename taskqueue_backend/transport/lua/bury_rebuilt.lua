-- Store the message of a task that failed for good and whose original message is gone (it was
-- acknowledged when it started): the worker rebuilds it from the task's request (failures.py)
-- and it goes straight into the dead letters, never through a queue. Its task id points at
-- the entry; the published time and the replay count of the original message are kept.
-- KEYS: dead, ids
-- ARGV: base, id, body, rank, task_id, priority, now_ms, deliveries, published_at_ms, replays,
--       reason, detail, worker, exc_type, exc_message, traceback
local base, id, now = ARGV[1], ARGV[2], ARGV[7]
local published = ARGV[9]
if published == '' then
  published = now
end
local mk = mkey(base, id)
redis.call('HSET', mk, 'body', ARGV[3], 'task_id', ARGV[5], 'priority', ARGV[6],
           'rank', ARGV[4], 'deliveries', ARGV[8], 'recoveries', 0, 'expire_at', 0,
           'published_at', published, 'replays', ARGV[10], 'worker', ARGV[13],
           'exc_type', ARGV[14], 'exc_message', ARGV[15], 'traceback', ARGV[16])
bury(base, id, ARGV[11], ARGV[12], now)
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[5], id)
end
touch(base, mk)
return 1
