-- Count one request against a throttle window, then read.lua's lease-guarded read.
-- KEYS[1] = generation key, KEYS[2] = throttle counter;
-- ARGV = base, name, token, lease ms, counter ttl s, limit (-1: no limit).
-- Counts first and stops there when over the limit, so a refused request
-- neither reads nor takes a lease.
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
local limit = tonumber(ARGV[6])
if limit >= 0 and count > limit then return {0, false} end
local gen = redis.call('GET', KEYS[1])
if not gen then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], now[1] .. '.' .. now[2], 'NX')
  gen = redis.call('GET', KEYS[1])
end
local v = redis.call('GET', ARGV[1] .. gen .. ':p:' .. ARGV[2])
if v then return {1, v} end
if redis.call('SET', ARGV[1] .. gen .. ':l:' .. ARGV[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {2, gen}
end
return {3, gen}
