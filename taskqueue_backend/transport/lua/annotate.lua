-- Add the reason Celery reported for a message already dead-lettered as 'rejected'.
-- KEYS: dead
-- ARGV: base, id, reason, detail
local mk = mkey(ARGV[1], ARGV[2])
if redis.call('HGET', mk, 'state') ~= 'dead' then
  return 0
end
count_dead(ARGV[1], redis.call('HGET', mk, 'reason'), -1)
count_dead(ARGV[1], ARGV[3], 1)
redis.call('HSET', mk, 'reason', ARGV[3], 'detail', ARGV[4])
return 1
