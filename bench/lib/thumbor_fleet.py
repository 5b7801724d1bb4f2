#!/usr/bin/env python3
"""Run N thumbor processes, each on its own SO_REUSEPORT socket (issue 13).

  thumbor_fleet.py --thumbor VENV/bin/thumbor --port P --processes N -- ARGS...

`thumbor --processes N` binds one socket and forks; under keep-alive load the kernel hands
every new connection to whichever child wakes first, so one child can end up with all of
wrk's connections while the others idle. Here every process gets its own listening socket
on the same port (SO_REUSEPORT), passed with thumbor's `--fd`, so the kernel spreads the
connections across the processes by hash, the way nginx's `reuseport` does.

This process stays in the foreground, forwards SIGTERM/SIGINT to its children and exits
when any of them does (so run.sh's cleanup and its /proc CPU accounting of the process tree
both see one root).
"""

import argparse
import signal
import socket
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thumbor", required=True)
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--processes", type=int, required=True)
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest

    children = []
    for _ in range(a.processes):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((a.ip, a.port))
        s.listen(1024)
        s.set_inheritable(True)
        fd = s.fileno()
        children.append(subprocess.Popen(
            [a.thumbor, "--fd", str(fd), "--processes", "1", *rest], pass_fds=(fd,)))
        s.close()  # the child holds its copy

    def stop(*_):
        for c in children:
            if c.poll() is None:
                c.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rc = 0
    # exit (and stop the rest) as soon as one child ends
    while all(c.poll() is None for c in children):
        try:
            children[0].wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    stop()
    for c in children:
        try:
            code = c.wait(timeout=10)
        except subprocess.TimeoutExpired:
            c.kill()
            code = c.wait()
        rc = rc or code
    sys.exit(rc)


if __name__ == "__main__":
    main()
