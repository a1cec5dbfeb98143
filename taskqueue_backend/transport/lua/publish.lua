-- Store one message and make it ready (or delayed until its ETA).
-- KEYS: ready (the queue's other keys share its hash tag: named from it)
-- ARGV: id, body, rank, task_id, due_ms (0 = now), expire_at_ms (0 = never), now_ms, priority
local base = string.sub(KEYS[1], 1, -7)  -- '<base>:ready'
local id = ARGV[1]
local rank, due, now = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[7])
local mk = mkey(base, id)
local delayed = due > now
local fields = {'body', ARGV[2], 'task_id', ARGV[4], 'priority', ARGV[8], 'rank', ARGV[3],
                'deliveries', 0, 'recoveries', 0, 'expire_at', ARGV[6],
                'published_at', ARGV[7], 'owner', '', 'state', delayed and 'delayed' or 'ready'}
if delayed then
  fields[#fields + 1] = 'due_at'
  fields[#fields + 1] = ARGV[5]
end
redis.call('HSET', mk, unpack(fields))
if ARGV[4] ~= '' then
  redis.call('HSET', base .. ':ids', ARGV[4], id)
end
if delayed then
  redis.call('ZADD', base .. ':delayed', due, id)
else
  redis.call('ZADD', KEYS[1], tail_score(base, rank), id)
end
-- a delayed message wakes consumers too, so they learn when it falls due
wake(base)
touch(base, mk)
return 1
