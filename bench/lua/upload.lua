-- Scenario 5: multipart upload (POST /up) of a unique ~200 KB JPEG per request.
-- Every body is BENCH_UPLOAD_FILE with a JPEG COM segment inserted right after SOI
-- that names the run (BENCH_NONCE), the wrk thread and a counter: a valid JPEG whose
-- MD5 is new every time, so deduplication never turns an upload into a no-op.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local jpeg_rest, nonce
local counter = 0
local boundary = "----sisbench7d1f0c"

function init(args)
  local f = assert(io.open(os.getenv("BENCH_UPLOAD_FILE"), "rb"))
  local data = f:read("*a")
  f:close()
  assert(data:sub(1, 2) == "\255\216", "upload file is not a JPEG")
  jpeg_rest = data:sub(3)
  nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
end

function request()
  counter = counter + 1
  local tag = string.format("sis-bench %s %d %d", nonce, tid, counter)
  local len = #tag + 2
  local jpeg = "\255\216\255\254" .. string.char(math.floor(len / 256), len % 256) .. tag .. jpeg_rest
  local name = string.format("u%s_%d_%d.jpg", nonce, tid, counter)
  local body = "--" .. boundary .. "\r\n" ..
    'Content-Disposition: form-data; name="file"; filename="' .. name .. '"\r\n' ..
    "Content-Type: image/jpeg\r\n\r\n" .. jpeg .. "\r\n--" .. boundary .. "--\r\n"
  return wrk.format("POST", "/up", {
    ["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
  }, body)
end
