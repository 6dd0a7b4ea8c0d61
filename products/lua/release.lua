-- Give a lease back (the filler found nothing, or failed) if it is still ours.
-- KEYS[1] = lease. ARGV[1] = "<gen>:<token>" as read.lua stored it.
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
