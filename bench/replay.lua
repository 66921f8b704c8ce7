-- wrk script: replay pre-generated callbacks, each one exactly once.
-- Arguments after "--": FILE THREADS QUOTA. Line k of FILE ("target<TAB>body") goes to thread
-- (k - 1) % THREADS. A thread stops after QUOTA responses; requests still in flight then use the
-- spare lines beyond the quota, so no callback is ever sent twice.

-- Throughput is measured here, from each thread's first request to its QUOTA-th answer (wrk's own
-- duration would include its -d sleep). Each thread prints QUOTA_DONE when it stops; the caller then
-- sends SIGINT so wrk ends its sleep and runs done().

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local timespec = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
  return tonumber(timespec.tv_sec) * 1000000 + tonumber(timespec.tv_nsec) / 1000
end

local next_thread = 0
local threads = {}

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
  threads[#threads + 1] = thread
end

local requests = {}
local sent = 0
local answered = 0
local quota = 0
bad = 0
answered_ok = 0

function init(args)
  local threads = tonumber(args[2])
  quota = tonumber(args[3])
  local headers = { ["Content-Type"] = "text/xml" }
  local k = 0
  for line in io.lines(args[1]) do
    if k % threads == thread_index then
      local tab = string.find(line, "\t", 1, true)
      local target = string.sub(line, 1, tab - 1)
      local body = string.sub(line, tab + 1)
      requests[#requests + 1] = wrk.format("POST", target, headers, body)
    end
    k = k + 1
  end
end

first_us = 0
quota_us = 0

function request()
  sent = sent + 1
  if sent == 1 then
    first_us = now_us()
  end
  if sent > #requests then
    -- out of spares: resend the last one (counted as a duplicate by the caller's check)
    return requests[#requests]
  end
  return requests[sent]
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    bad = bad + 1
  end
  if answered == quota then
    quota_us = now_us()
    answered_ok = answered - bad
    io.write("QUOTA_DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, reqs)
  local first, last, ok, failed = nil, 0, 0, 0
  for _, thread in ipairs(threads) do
    local t0 = thread:get("first_us")
    if first == nil or t0 < first then first = t0 end
    local t1 = thread:get("quota_us")
    if t1 > last then last = t1 end
    ok = ok + thread:get("answered_ok")
    failed = failed + thread:get("bad")
  end
  local p = {}
  for _, q in ipairs({ 50, 90, 99, 99.9 }) do
    p[#p + 1] = string.format('"%s": %d', tostring(q), latency:percentile(q))
  end
  io.write(string.format(
    'BENCH_JSON {"quota_ok": %d, "quota_failed": %d, "quota_us": %d, "requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, "latency_mean_us": %.1f, ' ..
    '"latency_max_us": %d, "latency_percentiles_us": {%s}}\n',
    ok, failed, last - first, summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, latency.mean,
    latency.max, table.concat(p, ", ")))
end
