#!/usr/bin/env python3
"""Scenario 7: the raw "limit" for durable uploads on this disk.

C workers (threads; write/fsync/rename release the GIL) each loop for D seconds:
create a temp file in DIR, write BYTES, fsync, close, rename to a unique final name.
That is the least work an upload that is acknowledged only once it is durable
needs, with no HTTP, hashing or parsing. Prints one BENCHJSON line in the same
shape as the wrk scripts (latencies in microseconds), then removes its files.

With --dir-fsync the directory is fsynced after the rename too (what makes the
rename itself durable): an informational second limit.

Usage: fsync_limit.py --dir DIR --file BYTES --concurrency C --duration D [--dir-fsync]
"""

import argparse
import json
import os
import shutil
import threading
import time


def worker(wid, d, data, deadline, lat, errors, dir_fsync):
    n = 0
    while time.monotonic() < deadline:
        n += 1
        tmp = os.path.join(d, f".tmp-{wid}-{n}")
        final = os.path.join(d, f"w{wid}-{n}.jpg")
        t0 = time.perf_counter()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            if dir_fsync:
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError:
            errors[wid] += 1
            continue
        lat[wid].append(time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--dir-fsync", action="store_true",
                    help="also fsync the directory after the rename (makes the rename itself durable)")
    a = ap.parse_args()
    with open(a.file, "rb") as f:
        data = f.read()
    d = os.path.join(a.dir, f"limit-{os.getpid()}")
    os.makedirs(d)
    lat = [[] for _ in range(a.concurrency)]
    errors = [0] * a.concurrency
    start = time.monotonic()
    deadline = start + a.duration
    threads = [
        threading.Thread(target=worker, args=(i, d, data, deadline, lat, errors, a.dir_fsync))
        for i in range(a.concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    all_lat = sorted(x for l in lat for x in l)

    def pct(p):
        if not all_lat:
            return 0
        return int(all_lat[min(len(all_lat) - 1, int(len(all_lat) * p / 100))] * 1e6)

    out = {
        "requests": len(all_lat),
        "duration_us": int(elapsed * 1e6),
        "bytes": len(all_lat) * len(data),
        "p50_us": pct(50),
        "p99_us": pct(99),
        "max_us": int(all_lat[-1] * 1e6) if all_lat else 0,
        "errors": sum(errors),
        "status_errors": 0,
        "timeouts": 0,
        "socket_errors": 0,
    }
    print("BENCHJSON " + json.dumps(out))
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
