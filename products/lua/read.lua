#!lua
-- The lease-guarded read of one product: the value, else a fresh lease (the
-- caller reads the database and fills), else "someone else is filling" (the
-- caller waits). Returns {1, json} | {2, gen} | {3, gen}.
-- The "#!lua" line (Redis 7) declares that it may write: a Redis that refuses
-- writes (NOREPLICAS, MISCONF, OOM) refuses it whole, hit or not, as it
-- refuses the writers' deletes, so no process serves a value a refused
-- delete left behind.
-- KEYS (one bucket, one hash slot): gen, value, lease. ARGV: token, lease ms.
--
-- A value is stored as "<gen>\n<json>" and a lease as "<gen>:<token>": both
-- count only under the bucket's current generation, so retiring it (a new
-- token in the gen key) makes every older value and lease of the bucket dead.
-- A missing generation (a fresh or flushed Redis, an evicted key) gets a new
-- unique token rather than a fixed default, so values stored under a retired
-- generation can never become reachable again.
-- scripts.source puts writers_allowed.lua (the ACL check) before this script.
local gen = redis.call('GET', KEYS[1])
if not gen then
  local now = redis.call('TIME')
  gen = 't' .. now[1] .. '.' .. now[2]
  redis.call('SET', KEYS[1], gen)
end
local head = gen .. '\n'
local value = redis.call('GET', KEYS[2])
if value and string.sub(value, 1, #head) == head then
  return {1, string.sub(value, #head + 1)}
end
local lease = redis.call('GET', KEYS[3])
-- A lease of this token's own (a warm-up sending its batch again after a
-- timeout) is taken again; a token is never reused otherwise.
if lease and string.sub(lease, 1, #gen + 1) == gen .. ':' and lease ~= gen .. ':' .. ARGV[1] then
  return {3, gen}
end
redis.call('SET', KEYS[3], gen .. ':' .. ARGV[1], 'PX', ARGV[2])
return {2, gen}
