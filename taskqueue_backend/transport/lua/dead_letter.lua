-- Move an owned in-flight message to the queue's dead letters, keeping its body as published.
-- KEYS: inflight, dead
-- ARGV: base, id, consumer, reason, detail, now_ms, worker
local base, id, consumer = ARGV[1], ARGV[2], ARGV[3]
local mk = mkey(base, id)
if redis.call('HGET', mk, 'owner') ~= consumer then
  return 0
end
unlease(base, id, consumer)
bury(base, id, ARGV[4], ARGV[5], ARGV[6])
redis.call('HSET', mk, 'worker', ARGV[7] or '')
return 1
