-- wrk script: POST /enqueue with a unique id per request and a 100-byte payload.
-- One wrk thread is used (-t1), so a per-thread counter makes ids unique.
local counter = 0
local payload = string.rep("p", 100)
local headers = { ["Content-Type"] = "application/json" }

request = function()
  counter = counter + 1
  local body = '{"id":"job-' .. counter .. '","payload":"' .. payload .. '","max_retries":3}'
  return wrk.format("POST", "/enqueue", headers, body)
end
