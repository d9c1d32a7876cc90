-- wrk script (same as the peer benchmark's): POST the JSON body in $BODY_FILE to the URL on the command line.
--   API_KEY        bearer token sent as "Authorization: Bearer ..." (default sk-bench)
--   EXTRA_HEADERS  extra request headers, one "Name: value" per line (newline-separated)
-- At the end it prints one machine-readable line:
--   RESULT requests=N duration_s=S rps=R p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. err_connect=.. err_read=.. err_write=.. err_timeout=.. non2xx=..
local f = assert(io.open(os.getenv("BODY_FILE") or "body.json", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("API_KEY") or "sk-bench")
local extra = os.getenv("EXTRA_HEADERS")
if extra and #extra > 0 then
  for line in string.gmatch(extra, "[^\n]+") do
    local k, v = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
    if k then wrk.headers[k] = v end
  end
end

function done(summary, latency, requests)
  local d = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.2f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f err_connect=%d err_read=%d err_write=%d err_timeout=%d non2xx=%d\n",
    summary.requests, d, summary.requests / d,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.timeout, e.status))
end
