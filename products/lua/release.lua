-- Give a lease back (the filler found nothing, or failed) if it is still ours.
-- KEYS[1] = generation key; ARGV = base, token, gen of the lease, name.
local lease = ARGV[1] .. ARGV[3] .. ':l:' .. ARGV[4]
if redis.call('GET', lease) == ARGV[2] then redis.call('DEL', lease) end
return 0
