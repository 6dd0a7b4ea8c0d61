-- Store a value only while the caller's lease still exists (no stale fill).
-- KEYS[1] = generation key; ARGV = base, name, token, gen of the lease, value, ttl s.
local gen = redis.call('GET', KEYS[1])
if gen ~= ARGV[4] then return 0 end
local lease = ARGV[1] .. gen .. ':l:' .. ARGV[2]
if redis.call('GET', lease) ~= ARGV[3] then return 0 end
redis.call('SET', ARGV[1] .. gen .. ':p:' .. ARGV[2], ARGV[5], 'EX', ARGV[6])
redis.call('DEL', lease)
return 1
