#!lua
-- The near cache's proof (products.nearcache): is the entry's value still in
-- Redis? "#!lua" as read.lua: a Redis that refuses or pauses writes answers
-- no proof either. KEYS: the bucket's generation, the product's value.
return redis.call('EXISTS', KEYS[2])
