-- The raw S3 reference (issue 12): pre-signed PUT or GET URLs straight to RGW.
-- BENCH_URLS: one path?query per line (bench/lib/s3raw.py urls); request k (counted across
-- wrk threads) takes line k mod N. BENCH_METHOD: PUT (body: BENCH_BODY_FILE, the bytes
-- sis's upload row sends inside its multipart body) or GET.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local paths = {}
local counter = 0
local nthreads, method, body

function init(args)
  for line in io.lines(os.getenv("BENCH_URLS")) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  method = os.getenv("BENCH_METHOD") or "GET"
  local file = os.getenv("BENCH_BODY_FILE")
  if method == "PUT" and file then
    local f = assert(io.open(file, "rb"))
    body = f:read("*a")
    f:close()
  end
end

function request()
  local k = counter * nthreads + tid
  counter = counter + 1
  local p = paths[(k % #paths) + 1]
  if method == "PUT" then
    return wrk.format("PUT", p, { ["Content-Type"] = "application/octet-stream" }, body)
  end
  return wrk.format("GET", p)
end
