-- Store a newly published message straight into the dead letters (a task that failed for
-- good, published again by its worker: see failures.py). Its task id points at the entry.
-- KEYS: dead, ids
-- ARGV: base, id, body, rank, task_id, priority, now_ms, deliveries, reason, detail, worker,
--       exc_type, exc_message, traceback
local base, id, now = ARGV[1], ARGV[2], ARGV[7]
local mk = mkey(base, id)
redis.call('HSET', mk, 'body', ARGV[3], 'task_id', ARGV[5], 'priority', ARGV[6],
           'rank', ARGV[4], 'deliveries', ARGV[8], 'recoveries', 0, 'expire_at', 0,
           'published_at', now, 'worker', ARGV[11], 'exc_type', ARGV[12],
           'exc_message', ARGV[13], 'traceback', ARGV[14])
bury(base, id, ARGV[9], ARGV[10], now)
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[5], id)
end
touch(base, mk)
return 1
