#!lua
-- A cached token authentication, valid only under the current auth generation
-- (products.authentication). Returns {1, payload} | {0, gen}.
-- KEYS (hash tag {products-auth}, one slot): generation, entry. A missing
-- generation gets a fresh unique value, so entries of an older one never match.
-- "#!lua": refused whole by a Redis that refuses writes, as read.lua says.
-- As read.lua: a user the ACL denies the invalidation's SET reads nothing.
if not redis.acl_check_cmd('SET', KEYS[1], '') then
  return redis.error_reply('NOPERM the ACL denies SET on the auth generation: changes could not invalidate')
end
local gen = redis.call('GET', KEYS[1])
if not gen then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], now[1] .. '.' .. now[2], 'NX')
  gen = redis.call('GET', KEYS[1])
end
local v = redis.call('GET', KEYS[2])
if v then
  local sep = string.find(v, '|', 1, true)
  if sep and string.sub(v, 1, sep - 1) == gen then return {1, string.sub(v, sep + 1)} end
end
return {0, gen}
