-- Acknowledge: forget messages their owner finished. A consumer that lost a lease (declared
-- dead, message returned) acknowledges nothing of it.
-- KEYS: inflight, ids
-- ARGV: base, consumer, id...
-- Returns the ids this consumer no longer held
return ack_held(ARGV[1], ARGV[2], 3)
