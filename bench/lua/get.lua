-- Scenarios 1, 2 (and 6 for them): the same URL over and over (the URL given to wrk).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
