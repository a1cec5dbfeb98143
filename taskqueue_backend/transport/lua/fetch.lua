-- Release due delayed messages, then lease up to `max` ready messages to one consumer
-- (nothing while the queue is paused), after acknowledging what the consumer finished since
-- its last call (as ack.lua: the acknowledgement rides on the fetch instead of its own call).
-- KEYS: ready, delayed, inflight, signal, state
-- ARGV: base, consumer, max, now_ms, release_limit, no_ack ('1': hand over and forget, no lease),
--       id... to acknowledge first
-- Returns {next_due_ms or '', {id, body, deliveries, published_at_ms, replays,
--          replayed_at_ms or '', ...},
--          {id, body, ...} of the messages found expired (dead-lettered, not delivered),
--          {id...} to acknowledge that this consumer no longer held}
-- A leased message remembers its position ('score'), where it goes back if it is returned.
local base, consumer = ARGV[1], ARGV[2]
local max, now, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local no_ack = ARGV[6] == '1'
local lost = ack_held(base, consumer, 7)

-- a paused queue leases nothing (and releases nothing) until it is resumed; its wake-up token
-- is not put back, so idle consumers wait for resume.lua instead of polling
local state = redis.call('HMGET', KEYS[5], 'paused', 'expires')
if state[1] == '1' then
  touch(base, nil, state[2])
  return {'', {}, {}, lost}
end

-- an idle queue costs few commands per fetch: the delayed set is scanned only when its
-- soonest message is due
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if nxt[2] and tonumber(nxt[2]) <= now then
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[2], id)
    local mk = mkey(base, id)
    local rank = redis.call('HGET', mk, 'rank')
    if rank then
      redis.call('HSET', mk, 'state', 'ready')
      redis.call('ZADD', KEYS[1], tail_score(base, tonumber(rank)), id)
    end
  end
  nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
end

local out = {}
local expired = {}
local leased = 0
local taken, scored = {}, {}  -- leased ids, and the (score, id) pairs for the inflight set
local empty = false
while leased < max and not empty do
  local want = max - leased
  local popped = redis.call('ZPOPMIN', KEYS[1], want)
  empty = #popped < 2 * want
  for i = 1, #popped, 2 do
    local id = popped[i]
    local mk = mkey(base, id)
    local f = redis.call('HMGET', mk, 'body', 'expire_at', 'published_at', 'task_id',
                         'replays', 'replayed_at', 'deliveries')
    if f[1] then
      local expire_at = tonumber(f[2]) or 0
      local n = (tonumber(f[7]) or 0) + 1
      if expire_at > 0 and expire_at <= now then
        bury(base, id, 'expired', 'message TTL passed before delivery', now)
        expired[#expired + 1] = id
        expired[#expired + 1] = f[1]
      else
        if no_ack then
          redis.call('DEL', mk)
          forget_task(base, id, f[4])
        else
          redis.call('HSET', mk, 'deliveries', n, 'state', 'inflight', 'owner', consumer,
                     'leased_at', now, 'score', popped[i + 1])
          taken[#taken + 1] = id
          scored[#scored + 1] = now
          scored[#scored + 1] = id
        end
        out[#out + 1] = id
        out[#out + 1] = f[1]
        out[#out + 1] = n
        out[#out + 1] = f[3] or ''
        out[#out + 1] = f[5] or 0
        out[#out + 1] = f[6] or ''
        leased = leased + 1
      end
    end
  end
end
call_sliced('ZADD', KEYS[3], scored, 2)
call_sliced('SADD', heldkey(base, consumer), taken)

if redis.call('ZCARD', KEYS[1]) > 0 then
  wake(base)
else
  redis.call('DEL', KEYS[4])
end
touch(base, nil, state[2])
return {nxt[2] or '', out, expired, lost}
