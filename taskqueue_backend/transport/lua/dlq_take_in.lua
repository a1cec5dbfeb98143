-- Replay across hash slots (Redis Cluster), step 1 of 2, on the target queue's node: store a
-- copy of one claimed dead letter of another queue and put it at the tail of its priority,
-- as dlq_release.lua does within one slot. Step 2 (dlq_hand_over.lua) removes the original;
-- if it never runs, the original goes back to its dead letters when the claim goes stale, so
-- a message is never lost (at worst it is kept twice).
-- KEYS: target ready, target signal, target state, target ids
-- ARGV: target_base, now_ms, from_base, id, body ('' = unchanged),
--       expire_at_ms ('' = unchanged, 0 = never), then the stored hash as field, value...
-- Returns 1 if the copy was queued, 0 if the stored hash had no rank.
local target, now, from, id, body, expire_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local tk = mkey(target, id)
local stored = {}
for i = 7, #ARGV, 2 do
  stored[ARGV[i]] = ARGV[i + 1]
  redis.call('HSET', tk, ARGV[i], ARGV[i + 1])
end
if not stored['rank'] then
  redis.call('DEL', tk)
  return 0
end
requeue_replayed(target, tk, id, tonumber(stored['rank']), stored['task_id'], now, from, body,
                 expire_at, KEYS[4])
wake(target)
touch(target, nil)
return 1
