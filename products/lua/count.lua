-- Count one request against a fixed-window throttle counter; prepended to
-- read.lua on a single Redis (the counter is in another hash slot, which one
-- server does not mind), so a cached hit costs one round trip. Counts first
-- and stops there when over the limit: a refused request neither reads nor
-- takes a lease.
-- KEYS[4] = counter. ARGV[3] = counter ttl s, ARGV[4] = limit (-1: no limit).
local count = redis.call('INCR', KEYS[4])
if count == 1 then redis.call('EXPIRE', KEYS[4], ARGV[3]) end
local limit = tonumber(ARGV[4])
if limit >= 0 and count > limit then return {0, false} end
