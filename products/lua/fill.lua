-- Store a product's value only while the caller's lease still exists under
-- the generation it was taken in (no stale fill).
-- KEYS (one bucket): gen, value, lease. ARGV: token, gen of the lease, json, ttl s.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
if redis.call('GET', KEYS[3]) ~= ARGV[2] .. ':' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2] .. '\n' .. ARGV[3], 'EX', ARGV[4])
redis.call('DEL', KEYS[3])
return 1
