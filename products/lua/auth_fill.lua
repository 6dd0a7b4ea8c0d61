-- Store a token authentication read from the database, only if the auth
-- generation is still the one seen before that read (no change committed since).
-- KEYS: generation, entry. ARGV: generation seen, payload, ttl s.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
