-- Shared prelude of every script: key layout and score arithmetic.
-- A queue's keys all start with BASE = "<prefix>tq:{<queue>}", so they share one hash tag.
-- Scores are exact integers below 2^53: rank * 2^44 + 2^43 +/- position.
local RANK_SPAN = 17592186044416
local MIDDLE = 8796093022208
local QUEUE_SUFFIXES = {':ready', ':delayed', ':inflight', ':dead', ':ids', ':signal', ':state',
                        ':replaying'}

local function fmt(n)
  return string.format('%.0f', n)
end

local function mkey(base, id)
  return base .. ':m:' .. id
end

local function heldkey(base, consumer)
  return base .. ':held:' .. consumer
end

-- the position after every message of this rank: FIFO within a priority
local function tail_score(base, rank)
  local seq = redis.call('HINCRBY', base .. ':state', 'seq', 1)
  return fmt(rank * RANK_SPAN + MIDDLE + seq)
end

-- the position before every message of this rank (for messages that never had one)
local function head_score(base, rank)
  local seq = redis.call('HINCRBY', base .. ':state', 'head', 1)
  return fmt(rank * RANK_SPAN + MIDDLE - seq)
end

-- where a message that comes back (requeue, hand-back, recovery) goes: the position it was
-- leased from, so it runs before everything published after it and requeued messages keep
-- their order among themselves
local function return_score(base, mk, rank)
  local score = redis.call('HGET', mk, 'score')
  if score then
    return score
  end
  return head_score(base, rank)
end

-- one token in the signal list means "this queue may have ready messages"
local function wake(base)
  if redis.call('LLEN', base .. ':signal') == 0 then
    redis.call('RPUSH', base .. ':signal', '1')
  end
end

-- queues declared with x-expires (reply queues) keep all their keys alive together; a caller
-- that has read the queue's 'expires' field already passes it (false when the queue has none)
local function touch(base, msgkey, ttl)
  if ttl == nil then
    ttl = redis.call('HGET', base .. ':state', 'expires')
  end
  if ttl then
    for _, suffix in ipairs(QUEUE_SUFFIXES) do
      redis.call('PEXPIRE', base .. suffix, ttl)
    end
    if msgkey then
      redis.call('PEXPIRE', msgkey, ttl)
    end
  end
end

-- dead letters are counted by reason in the queue's state hash ('dead:<reason>'), so the
-- metrics read them without scanning the entries
local function count_dead(base, reason, n)
  redis.call('HINCRBY', base .. ':state', 'dead:' .. (reason or 'unknown'), n)
end

-- the message must already be out of ready/delayed/inflight
local function bury(base, id, reason, detail, now)
  local mk = mkey(base, id)
  redis.call('HSET', mk, 'state', 'dead', 'owner', '', 'reason', reason,
             'detail', detail, 'dead_at', now)
  redis.call('ZADD', base .. ':dead', now, id)
  count_dead(base, reason, 1)
end

-- release an owned in-flight message from its consumer's lease
local function unlease(base, id, consumer)
  redis.call('ZREM', base .. ':inflight', id)
  redis.call('SREM', heldkey(base, consumer), id)
end

local function forget_task(base, id, task_id)
  if task_id and task_id ~= '' and redis.call('HGET', base .. ':ids', task_id) == id then
    redis.call('HDEL', base .. ':ids', task_id)
  end
end

-- run `command key items...` in slices (Lua's unpack() is limited to a few thousand values);
-- `stride` keeps pairs (score, member) together
local function call_sliced(command, key, items, stride)
  local slice = 1000 * (stride or 1)
  for i = 1, #items, slice do
    redis.call(command, key, unpack(items, i, math.min(i + slice - 1, #items)))
  end
end

-- acknowledge ARGV[first..]: forget each message this consumer still holds; returns the ids
-- it no longer held (returned to the queue after a missed heartbeat, or acknowledged already)
local function ack_held(base, consumer, first)
  local lost, gone, keys, tasks, acked = {}, {}, {}, {}, {}
  for i = first, #ARGV do
    local id = ARGV[i]
    local mk = mkey(base, id)
    local f = redis.call('HMGET', mk, 'owner', 'task_id')
    if f[1] == consumer then
      gone[#gone + 1] = id
      acked[id] = true
      keys[#keys + 1] = mk
      if f[2] and f[2] ~= '' then
        tasks[#tasks + 1] = f[2]
      end
    else
      lost[#lost + 1] = id
    end
  end
  if #gone == 0 then
    return lost
  end
  for i = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
  end
  call_sliced('ZREM', base .. ':inflight', gone)
  call_sliced('SREM', heldkey(base, consumer), gone)
  if #tasks > 0 then
    -- the task-id index is cleared only where it still names this message
    local ids = base .. ':ids'
    local stale = {}
    for from = 1, #tasks, 1000 do
      local upto = math.min(from + 999, #tasks)
      local now_at = redis.call('HMGET', ids, unpack(tasks, from, upto))
      for i = from, upto do
        local at = now_at[i - from + 1]
        if at and acked[at] then
          stale[#stale + 1] = tasks[i]
        end
      end
    end
    call_sliced('HDEL', ids, stale)
  end
  return lost
end

-- a replayed message (stored at mk) is ready again in queue TARGET: the poison count starts
-- over, the replay is counted, a new body or expiry (not '') replaces the old, and it goes
-- to the tail of its priority; ids is the target's task-id index
local function requeue_replayed(target, mk, id, rank, task_id, now, from, body, expire_at, ids)
  redis.call('HSET', mk, 'state', 'ready', 'owner', '', 'recoveries', 0,
             'replayed_at', now, 'replayed_from', from)
  if body ~= '' then
    redis.call('HSET', mk, 'body', body)
  end
  if expire_at ~= '' then
    redis.call('HSET', mk, 'expire_at', expire_at)
  end
  redis.call('HINCRBY', mk, 'replays', 1)
  if task_id and task_id ~= '' then
    redis.call('HSET', ids, task_id, id)
  end
  redis.call('ZADD', target .. ':ready', tail_score(target, rank), id)
end
