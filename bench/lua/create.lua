-- POST a new product with a unique name on every request.
-- wrk args: run_id [token]
local run_id, token
local counter = 0
local n = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  run_id = args[1]
  token = args[2]
  wrk.headers["Content-Type"] = "application/json"
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Token " .. token
  end
end

function request()
  n = n + 1
  local body = string.format(
    '{"name": "new-%s-%d-%d", "price": "9.99", "quantity": 3}', run_id, thread_id or 0, n)
  return wrk.format("POST", nil, nil, body)
end
