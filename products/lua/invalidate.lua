-- Delete the values and revoke the fill leases of the named products.
-- KEYS[1] = generation key; ARGV = base, names... (no generation: nothing cached)
local gen = redis.call('GET', KEYS[1])
if not gen then return 0 end
for i = 2, #ARGV do
  redis.call('DEL', ARGV[1] .. gen .. ':p:' .. ARGV[i], ARGV[1] .. gen .. ':l:' .. ARGV[i])
end
return #ARGV - 1
