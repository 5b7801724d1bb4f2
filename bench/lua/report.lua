-- Shared by every bench script: prints one machine-readable line when wrk is done.
-- Latencies are in microseconds; errors = connect + read + write + timeout + non-2xx/3xx.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"errors":%d,"status_errors":%d,"timeouts":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout, e.status, e.timeout,
    e.connect + e.read + e.write))
end
