#!/usr/bin/env python3
"""Small /proc helpers for run.sh.

  procs.py ports N          print N free 127.0.0.1 TCP ports
  procs.py settle PID...    wait (max 60 s) until the process trees of PIDs are idle
                            (< 5% of one core over 0.5 s): a peer still chewing on
                            requests queued by the last run must not steal CPU from the next
  procs.py hwm PID          peak RSS (VmHWM) of PID in KiB
  procs.py cpu PID...       CPU time (user + system) of the process trees of PIDs, in us
  procs.py snap PID...      the same per process: JSON {pid: [us, name]} of every process in the trees
  procs.py delta A B        two snaps (JSON strings) -> JSON [[name, pid, us], ...] of the
                            processes that used CPU in between, busiest first
  procs.py corpus MANIFEST  one-line summary of the corpus (count, JPEG settings, MB per class)
  procs.py djpeg W H FILE...  the entropy-decode floor: mean CPU time (us, user + system) of
                            `djpeg -scale 1/N` per file, N the largest DCT reduction whose output
                            still covers the box W x H when fitted inside it (what sis picks)
"""

import json
import resource
import subprocess

import os
import socket
import sys
import time


def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def tree(roots):
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                parent[int(d)] = int(parts[1])
            except OSError:
                pass
    out, todo = set(), [r for r in roots if r in parent]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def cpu(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += int(parts[11]) + int(parts[12])
        except OSError:
            pass
    return total


def snap(roots):
    out = {}
    for p in tree(roots):
        try:
            with open(f"/proc/{p}/stat") as f:
                raw = f.read()
            name = raw.split("(", 1)[1].rsplit(")", 1)[0]
            parts = raw.rsplit(")", 1)[1].split()
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            # python scripts: name them by the script (thumbor, thumbor_fleet.py)
            if name.startswith("python") and len(argv) > 1:
                name = os.path.basename(argv[1].decode(errors="replace"))
            ticks = int(parts[11]) + int(parts[12])
            out[str(p)] = [ticks * 1_000_000 // os.sysconf("SC_CLK_TCK"), name]
        except (OSError, IndexError, ValueError):
            pass
    return out


def delta(a, b):
    a, b = json.loads(a), json.loads(b)
    rows = []
    for pid, (us, name) in b.items():
        d = us - a.get(pid, [0])[0]
        if d > 0:
            rows.append([name, int(pid), d])
    rows.sort(key=lambda r: -r[2])
    return rows


def djpeg_floor(box_w, box_h, files):
    import tempfile
    from PIL import Image  # only in the bench venv

    def run(scale, path):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["djpeg", "-scale", scale, "-outfile", os.devnull, path], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    # djpeg's own start-up (exec, dynamic linking), subtracted below
    with tempfile.NamedTemporaryFile(suffix=".jpg") as tiny:
        Image.new("RGB", (16, 16), (128, 64, 32)).save(tiny.name, "JPEG")
        startup = sum(run("1/1", tiny.name) for _ in range(8)) / 8
    total, n = 0, 0
    for f in files:
        with Image.open(f) as im:
            w, h = im.size
        s = min(box_w / w, box_h / h, 1.0)
        need = (max(1, round(w * s)), max(1, round(h * s)))
        r = 1
        for cand in (8, 4, 2):
            if w // cand >= need[0] and h // cand >= need[1]:
                r = cand
                break
        total += max(0.0, run(f"1/{r}", f) - startup)
        n += 1
    print(int(total * 1e6 / n) if n else 0)


def settle(roots):
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = tree(roots)
        a = cpu(pids)
        time.sleep(0.5)
        if (cpu(pids) - a) / hz < 0.025:
            return
    print("settle: still busy after 60 s", file=sys.stderr)


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                print(line.split()[1])
                return
    print(0)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ports":
        ports(int(args[0]))
    elif cmd == "settle":
        settle([int(a) for a in args])
    elif cmd == "hwm":
        hwm(int(args[0]))
    elif cmd == "snap":
        print(json.dumps(snap([int(a) for a in args])))
    elif cmd == "delta":
        print(json.dumps(delta(args[0], args[1])))
    elif cmd == "corpus":
        # MANIFEST -> "24 x p1 (q75-95, 4:2:0+4:4:4, baseline+progressive, 9 MB), ..."
        groups = {}
        with open(args[0]) as f:
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if "_" not in cols[0]:
                    continue
                g = groups.setdefault(cols[0].split("_")[0], [0, 0, set()])
                g[0] += 1
                g[1] += int(cols[1])
                if len(cols) > 3:
                    g[2].update(cols[3].split())
        print(", ".join(f"{n} x {k} ({' '.join(sorted(t))}; {b / 1e6:.0f} MB)".replace(" ()", "")
                        for k, (n, b, t) in groups.items()))
    elif cmd == "djpeg":
        djpeg_floor(int(args[0]), int(args[1]), args[2:])
    elif cmd == "cpu":
        ticks = cpu(tree([int(a) for a in args]))
        print(ticks * 1_000_000 // os.sysconf("SC_CLK_TCK"))
