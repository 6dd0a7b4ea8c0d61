#!lua
-- Put before read.lua and proof.lua by scripts.source: a user the ACL
-- denies the writers' DEL (or a retirement's SET) would read on while every
-- write's invalidation is refused, so its reads are refused as well.
-- KEYS: the bucket's generation, the product's value (as in read.lua).
if not (redis.acl_check_cmd('DEL', KEYS[2]) and redis.acl_check_cmd('SET', KEYS[1], '')) then
  return redis.error_reply('NOPERM the ACL denies DEL or SET on the product keys: writes could not invalidate')
end
