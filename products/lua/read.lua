-- The lease-guarded read: the value, else a fresh lease (the caller fills),
-- else "someone else is filling" (the caller waits).
-- KEYS[1] = generation key; ARGV = base, name, token, lease ms.
-- A missing generation (a fresh or flushed Redis, an evicted key) gets a new
-- unique token rather than a fixed default, so values stored under a retired
-- generation can never become reachable again.
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
