-- Mark a consumer offline (it stopped, or it died and its messages were returned), unless it
-- has beaten since `stale_before` (it resumed). The move out of the live registry happens
-- once; every caller adds what it returned and dead-lettered to the consumer's counts.
-- KEYS: consumers, offline, consumer hash
-- ARGV: consumer, stale_before_ms ('+inf' = unconditionally), now_ms, reason, returned,
--       dead_lettered, recovered_by, keep_ms
-- Returns 1 if this call moved the consumer offline, 0 otherwise.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and ARGV[2] ~= '+inf' and tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
local moved = 0
if score then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[3], 'state', 'offline', 'offline_at', ARGV[3], 'offline_reason', ARGV[4],
             'recovered_by', ARGV[7], 'last_beat', score)
  moved = 1
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'returned', tonumber(ARGV[5]))
  redis.call('HINCRBY', KEYS[3], 'dead_lettered', tonumber(ARGV[6]))
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
end
return moved
