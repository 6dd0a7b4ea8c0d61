-- Trust a bucket's generation only on the server instance that set it.
-- KEYS (one bucket): gen, server. ARGV: this server's mark (its run_id, and on
-- one Redis or Sentinel the epoch of the last switch of server:
-- products.serverledger), a new generation.
-- Run on every bucket when a process meets a server it has not checked (a
-- restart from a snapshot, a failover, a process that just started): a
-- bucket last adopted by another run_id gets a fresh generation, so nothing
-- the old server's data holds can be served.
-- Returns 0: already this server's; 1: retired (another server's mark);
-- 2: no mark at all (a fresh or emptied Redis: nothing of the cache's to retire).
local mark = redis.call('GET', KEYS[2])
if mark == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
if not mark then return 2 end
return 1
