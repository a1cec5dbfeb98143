-- Forget a consumer, unless it has beaten since `stale_before` (it resumed).
-- KEYS: consumers, consumer hash
-- ARGV: consumer, stale_before_ms ('+inf' = unconditionally)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and ARGV[2] ~= '+inf' and tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
