-- Store one message and make it ready (or delayed until its ETA).
-- KEYS: ready, delayed, ids, signal, state
-- ARGV: base, id, body, rank, task_id, due_ms (0 = now), expire_at_ms (0 = never), now_ms, priority
local base, id = ARGV[1], ARGV[2]
local rank, due, now = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[8])
local mk = mkey(base, id)
redis.call('HSET', mk, 'body', ARGV[3], 'task_id', ARGV[5], 'priority', ARGV[9],
           'rank', ARGV[4], 'deliveries', 0, 'recoveries', 0, 'expire_at', ARGV[7],
           'published_at', ARGV[8], 'owner', '')
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[5], id)
end
if due > now then
  redis.call('HSET', mk, 'state', 'delayed', 'due_at', ARGV[6])
  redis.call('ZADD', KEYS[2], due, id)
else
  redis.call('HSET', mk, 'state', 'ready')
  redis.call('ZADD', KEYS[1], tail_score(base, rank), id)
end
-- a delayed message wakes consumers too, so they learn when it falls due
wake(base)
touch(base, mk)
return 1
