-- Count a queue cheaply: ready per rank, delayed, in flight, dead, and the oldest ages.
-- KEYS: ready, delayed, inflight, dead
-- ARGV: base, max_rank
-- Returns {{rank, count, ...}, delayed, inflight, dead, oldest_ready_published_ms or '',
--          oldest_lease_ms or '', next_due_ms or '', paused_since_ms or '',
--          {reason, dead count, ...}}
local base, max_rank = ARGV[1], tonumber(ARGV[2])
local per_rank = {}
local oldest = nil
for rank = 0, max_rank do
  local lo = rank * RANK_SPAN
  local hi = '(' .. fmt((rank + 1) * RANK_SPAN)
  local c = redis.call('ZCOUNT', KEYS[1], fmt(lo), hi)
  if c > 0 then
    per_rank[#per_rank + 1] = rank
    per_rank[#per_rank + 1] = c
    local first = redis.call('ZRANGEBYSCORE', KEYS[1], fmt(lo), hi, 'LIMIT', 0, 1)
    local at = tonumber(redis.call('HGET', mkey(base, first[1]), 'published_at'))
    if at and (oldest == nil or at < oldest) then
      oldest = at
    end
  end
end
local lease = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local state = redis.call('HGETALL', base .. ':state')
local paused, paused_at = nil, nil
local by_reason = {}
for i = 1, #state, 2 do
  local name, value = state[i], state[i + 1]
  if name == 'paused' then
    paused = value
  elseif name == 'paused_at' then
    paused_at = value
  elseif string.sub(name, 1, 5) == 'dead:' and tonumber(value) > 0 then
    by_reason[#by_reason + 1] = string.sub(name, 6)
    by_reason[#by_reason + 1] = value
  end
end
if paused == '1' then
  paused = paused_at or '0'
else
  paused = ''
end
return {per_rank, redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        redis.call('ZCARD', KEYS[4]), oldest and fmt(oldest) or '', lease[2] or '', nxt[2] or '',
        paused, by_reason}
