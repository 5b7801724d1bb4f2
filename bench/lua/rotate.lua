-- Cold-resize scenarios (3, 4, and 3 through the agent): every request asks for a
-- different original. BENCH_URLS is a file of path templates, one original per line,
-- with {W} and {H} placeholders. Request k (counted across all wrk threads) takes
-- original k mod N at width BENCH_W and height BENCH_H + floor(k / N): once every
-- original has been asked for, the height grows by one pixel, so the pair
-- (original, size) is never repeated and no result cache can help.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local paths = {}
local counter = 0
local nthreads, base_w, base_h

function init(args)
  for line in io.lines(os.getenv("BENCH_URLS")) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  base_w = tonumber(os.getenv("BENCH_W") or "300")
  base_h = tonumber(os.getenv("BENCH_H") or "200")
end

function request()
  local k = counter * nthreads + tid
  counter = counter + 1
  local n = #paths
  local p = paths[(k % n) + 1]
  p = p:gsub("{W}", tostring(base_w)):gsub("{H}", tostring(base_h + math.floor(k / n)))
  return wrk.format("GET", p)
end
