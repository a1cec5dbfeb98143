-- Retention: drop dead letters older than min_dead_at_ms (0: no age limit), then the
-- oldest beyond max_count (0: no count limit). Every trim is counted in the queue's state
-- hash ('dead_trimmed'); the caller logs it.
-- KEYS: dead, state
-- ARGV: base, max_count, min_dead_at_ms
-- Returns {id, task_id, reason, ...} of the entries trimmed.
local base, max_count, min_at = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local victims = {}
if min_at > 0 then
  victims = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(min_at), 'LIMIT', 0, 10000)
end
if max_count > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - #victims - max_count
  if excess > 0 then
    local more = redis.call('ZRANGE', KEYS[1], #victims, #victims + math.min(excess, 10000) - 1)
    for _, id in ipairs(more) do
      victims[#victims + 1] = id
    end
  end
end
local out = {}
for _, id in ipairs(victims) do
  local mk = mkey(base, id)
  local f = redis.call('HMGET', mk, 'task_id', 'reason')
  redis.call('ZREM', KEYS[1], id)
  count_dead(base, f[2], -1)
  forget_task(base, id, f[1])
  redis.call('DEL', mk)
  out[#out + 1] = id
  out[#out + 1] = f[1] or ''
  out[#out + 1] = f[2] or ''
end
if #victims > 0 then
  redis.call('HINCRBY', KEYS[2], 'dead_trimmed', #victims)
end
return out
