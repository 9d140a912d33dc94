-- wrk script for the Stripe stand-in's own cost: the two calls the apps make for one refund, alternately
--   GET /v1/charges/ch_bench_NNNN, then POST /v1/refunds (1 cent, a fresh Idempotency-Key).
--   wrk ... -s bench/standin.lua http://127.0.0.1:PORT -- <run nonce> <api key> <charges>
-- done() prints "BENCH {json}" like refund.lua; a "request" here is one call, half a refund.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  nonce = args[1]
  key = args[2]
  charges = tonumber(args[3])
  counter = 0
  not_ok = 0
end

function request()
  counter = counter + 1
  local pair = math.floor((counter + 1) / 2)
  local charge = string.format("ch_bench_%04d", (id * 7919 + pair) % charges)
  local headers = {["Authorization"] = "Bearer " .. key}
  if counter % 2 == 1 then
    return wrk.format("GET", "/v1/charges/" .. charge, headers)
  end
  headers["Content-Type"] = "application/x-www-form-urlencoded"
  headers["Idempotency-Key"] = string.format("standin-%s-%d-%d", nonce, id, pair)
  local body = "charge=" .. charge .. "&amount=1&reason=requested_by_customer&metadata[request_key]=" .. pair
  return wrk.format("POST", "/v1/refunds", headers, body)
end

function response(status, headers, body)
  if status ~= 200 then
    not_ok = not_ok + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("not_ok")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "not_200": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "status_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad,
    e.connect, e.read, e.write, e.timeout, e.status))
end
