-- wrk script for bench/run.sh: sends an optional Cookie header and prints one
-- machine-readable line with the figures the report needs.
--
--   wrk -s load.lua URL                 -- new sessions: no cookie, each response sets one
--   wrk -s load.lua URL -- 'SRV=s1'     -- pinned: every request carries the proxy's cookie
--
-- The cookie is set once per thread in init(), so the request is still built once and
-- wrk stays on its fast path (no per-request Lua).

function init(args)
   local cookie = args[1]
   if cookie ~= nil and cookie ~= "" then
      wrk.headers["Cookie"] = cookie
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
      "\"err_connect\": %d, \"err_read\": %d, \"err_write\": %d, \"err_status\": %d, " ..
      "\"err_timeout\": %d, \"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, " ..
      "\"max_us\": %d, \"mean_us\": %.1f}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
