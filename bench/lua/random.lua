-- GET a random product out of N: path = prefix .. name .. suffix.
-- wrk args: prefix suffix count
local prefix, suffix, count
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  prefix = args[1]
  suffix = args[2] or ""
  count = tonumber(args[3] or "10000")
  math.randomseed(os.time() * 100 + (thread_id or 0))
end

function request()
  local name = string.format("product-%05d", math.random(1, count))
  return wrk.format("GET", prefix .. name .. suffix)
end
