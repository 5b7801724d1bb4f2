#!/usr/bin/env python3
"""Small /proc helpers for run.sh.

  procs.py ports N          print N free 127.0.0.1 TCP ports
  procs.py settle PID...    wait (max 60 s) until the process trees of PIDs are idle
                            (< 5% of one core over 0.5 s): a peer still chewing on
                            requests queued by the last run must not steal CPU from the next
  procs.py hwm PID          peak RSS (VmHWM) of PID in KiB
  procs.py cpu PID...       CPU time (user + system) of the process trees of PIDs, in us
"""

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
    elif cmd == "cpu":
        ticks = cpu(tree([int(a) for a in args]))
        print(ticks * 1_000_000 // os.sysconf("SC_CLK_TCK"))
