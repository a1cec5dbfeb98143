-- Return every message a consumer holds in this queue to the position it was leased from.
-- When the consumer died (count = 1) each return counts; past max_redeliveries the
-- message is poison and goes to the dead letters instead. Idempotent: run it twice,
-- the second run finds nothing.
-- KEYS: ready, inflight, signal, state, dead
-- ARGV: base, consumer, max_redeliveries, now_ms, count
local base, consumer = ARGV[1], ARGV[2]
local maxr, now, count = tonumber(ARGV[3]), ARGV[4], ARGV[5] == '1'
local held = heldkey(base, consumer)
local returned, buried = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', held)) do
  local mk = mkey(base, id)
  local f = redis.call('HMGET', mk, 'owner', 'rank', 'recoveries', 'task_id')
  local label = f[4]
  if not label or label == '' then
    label = id
  end
  if f[1] == consumer then
    redis.call('ZREM', KEYS[2], id)
    local rec = tonumber(f[3]) or 0
    if count then
      rec = redis.call('HINCRBY', mk, 'recoveries', 1)
    end
    if count and rec > maxr then
      bury(base, id, 'poison',
           'returned ' .. rec .. ' times after its worker died (max_redeliveries=' .. maxr .. ')', now)
      buried[#buried + 1] = label
    else
      redis.call('HSET', mk, 'state', 'ready', 'owner', '', 'returned_from', consumer,
                 'returned_at', now)
      redis.call('ZADD', KEYS[1], return_score(base, mk, tonumber(f[2])), id)
      returned[#returned + 1] = label
    end
  end
end
redis.call('DEL', held)
if #returned > 0 then
  wake(base)
end
touch(base, nil)
return {returned, buried}
