-- wrk script for `make bench`: every request is a new auto-approved refund of 1 cent.
--   wrk ... -s bench/refund.lua http://127.0.0.1:PORT -- <run nonce> <intake token> <charges>
-- Each request has a fresh Idempotency-Key (nonce, thread, counter) and takes the next of the
-- stand-in's ch_bench_NNNN charges, so concurrent requests rarely share a charge.
-- done() prints one line "BENCH {json}" with the counts and latencies that bench/run.py reads.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  nonce = args[1]
  token = args[2]
  charges = tonumber(args[3])
  counter = 0
  not_ok = 0
end

function request()
  counter = counter + 1
  local charge = string.format("ch_bench_%04d", (id * 7919 + counter) % charges)
  local body = string.format('{"charge_id":"%s","amount":1}', charge)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = string.format("bench-%s-%d-%d", nonce, id, counter),
  }
  return wrk.format("POST", "/refund-request", headers, body)
end

function response(status, headers, body)
  -- The service answers 202 when it could not finish a refund now: not a refund done, so not a figure.
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
