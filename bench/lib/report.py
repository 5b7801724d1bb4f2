#!/usr/bin/env python3
"""Turn one bench run (meta.json + results.jsonl) into the Markdown report.

  report.py META RESULTS OUT.md     write the report (table, ratios vs targets, RSS)
  report.py --check RESULTS         smoke verdict: every scenario ran with requests and
                                    no errors on our targets; prints "N passed, N failed"
"""

import json
import sys

SCENARIOS = {
    "1": "GET a stored 2 MP original",
    "2": "GET a 300x200 variant already cached",
    "3": "cold resize 2 MP JPEG -> 300x200, a different original each request",
    "4": "cold resize 12 MP JPEG -> 300x200, a different original each request",
    "5": "multipart upload of a unique ~200 KB JPEG",
    "6.1": "(6) scenario 1 through the agent",
    "6.2": "(6) scenario 2 through the agent",
    "6.3": "(6) scenario 3 through the agent",
    "7": "raw write + fsync + rename of the same bytes, same concurrency, same file system "
         "(the upload limit; 'raw + dir fsync' also fsyncs the directory after the rename, informational)",
}
OURS = {"sis", "agent"}
SKIP_OK = ("not run: agent not built",)


def load(path):
    rows, checks = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            (checks if "check" in r else rows).append(r)
    return rows, checks


def rps(r):
    res = r.get("result")
    if not res or not res["duration_us"]:
        return None
    return res["requests"] * 1e6 / res["duration_us"]


def find(rows, scen, target, conc=None):
    for r in rows:
        if r["scenario"] == scen and r["target"] == target and (conc is None or r["conc"] == conc):
            return r
    return None


def fmt_ms(us):
    return f"{us / 1000:.1f}" if us >= 1000 else f"{us / 1000:.2f}"


def cpu_per_request(r):
    """Target CPU time (its process trees, user + system) per completed request, in us;
    also counts work on requests still in flight when the run ended, so slow targets
    are charged a little extra."""
    res, cpu = r.get("result"), r.get("cpu_us")
    if not res or cpu is None or not res["requests"]:
        return ""
    return f"{cpu / res['requests']:.0f}"


def table(rows):
    out = ["| scenario | target | conc | req/s | p50 ms | p99 ms | errors | requests | CPU µs/req |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        res = r.get("result")
        name = f"{r['scenario']}"
        if res:
            out.append(f"| {name} | {r['target']} | {r['conc']} | {rps(r):.1f} | "
                       f"{fmt_ms(res['p50_us'])} | {fmt_ms(res['p99_us'])} | {res['errors']} | "
                       f"{res['requests']} | {cpu_per_request(r)} |")
        else:
            out.append(f"| {name} | {r['target']} | {r['conc']} | {r['status']} | | | | | |")
    return out


def ratio_line(label, num, den, goal, extra=""):
    if num is None or den is None or den == 0:
        return f"| {label} | n/a | ≥ {goal}× | not measured{extra} |"
    x = num / den
    verdict = "met" if x >= goal else "missed"
    return f"| {label} | {x:.2f}× | ≥ {goal}× | {verdict}{extra} |"


def ratios(rows, checks, meta):
    c = meta["connections"]
    out = ["| target | ratio | goal | verdict |", "|---|---:|---:|---|"]

    def v(s, t, conc=None):
        r = find(rows, s, t, conc)
        return rps(r) if r else None

    out.append(ratio_line("(1) original: sis / nginx static", v("1", "sis"), v("1", "nginx"), 1.0))
    out.append(ratio_line("(2) cached variant: sis / nginx proxy_cache", v("2", "sis"),
                          v("2", "nginx proxy_cache"), 1.0))
    for s, what in (("3", "2 MP"), ("4", "12 MP")):
        peers = [x for x in (v(s, "nginx image_filter"), v(s, "thumbor")) if x]
        best = max(peers) if peers else None
        out.append(ratio_line(f"({s}) cold resize {what}: sis / best(nginx, thumbor)",
                              v(s, "sis"), best, 2.0))
    for conc in sorted({1, c}):
        out.append(ratio_line(f"(5) upload c={conc}: sis / raw fs limit (7)",
                              v("5", "sis", conc), v("7", "raw fs limit", conc), 0.8))
    for conc in sorted({1, c}):
        a, b = v("5", "sis", conc), v("7", "raw + dir fsync", conc)
        if a and b:
            out.append(f"| (info) upload c={conc}: sis / raw + dir fsync | {a / b:.2f}× | | |")
    up = find(rows, "5", "sis", c)
    if up and up.get("result"):
        e = up["result"]["errors"]
        out.append(f"| (5) upload errors at c={c} | {e} | 0 | {'met' if e == 0 else 'missed'} |")
    else:
        out.append(f"| (5) upload errors at c={c} | n/a | 0 | not measured |")
    fs = next((k for k in checks if k["check"] == "fsync"), None)
    if fs and fs.get("wrk"):
        acked = fs["wrk"]["requests"] - fs["wrk"]["errors"]
        ok = fs["fsync_calls"] >= acked > 0
        out.append(f"| (5) acknowledged uploads fsynced (strace, {acked} uploads) | "
                   f"{fs['fsync_calls']} fsync calls | ≥ {acked} | {'met' if ok else 'missed'} |")
    for s, base in (("6.1", "1"), ("6.2", "2"), ("6.3", "3")):
        out.append(ratio_line(f"({s}) agent / direct scenario {base}", v(s, "agent"), v(base, "sis"), 0.7))
    return out


def memory(meta):
    size = meta["sis_cache_size"]
    units = {"KiB": 1, "MiB": 1024, "GiB": 1024 * 1024}
    limit_kib = None
    for u, m in units.items():
        if size.endswith(u):
            limit_kib = int(size[: -len(u)]) * m + 64 * 1024
    out = ["| process | peak RSS (VmHWM) | limit (cache + 64 MiB) | verdict |", "|---|---:|---:|---|"]
    for name, key in (("sis server", "rss_server_kib"), ("sis agent", "rss_agent_kib")):
        kib = meta[key]
        if not kib:
            out.append(f"| {name} | not run | {size} + 64 MiB | not measured |")
            continue
        verdict = "met" if limit_kib and kib <= limit_kib else "missed"
        out.append(f"| {name} | {kib / 1024:.1f} MiB | {limit_kib / 1024:.0f} MiB | {verdict} |")
    return out


def profile_highlights(path, top=10):
    """The top self-cost functions of each callgrind section of profile.txt."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    out = []
    for sec in text.split("\n## ")[1:]:
        title, _, body = sec.partition("\n")
        if "### exclusive" not in body:
            continue
        rows = body.split("### exclusive", 1)[1].split("\n")[1:]
        rows = [r for r in rows if "%)" in r and "PROGRAM TOTALS" not in r][:top]
        out += [f"**{title}** (callgrind, self instructions):", "", "```"] + rows + ["```", ""]
    return out


def report(meta_path, results_path, out_path, profile_path=""):
    with open(meta_path) as f:
        meta = json.load(f)
    rows, checks = load(results_path)
    lines = [
        "# sis benchmark: latest run" + (" (SMOKE: 1 s runs, dev build, scenario 3 on 0.3 MP and 4 on "
                                          "2 MP originals: checks the harness, measures nothing)"
                                          if meta["smoke"] else ""),
        "",
        f"- date: {meta['date']}; sis commit {meta['sis_commit']} (cargo profile {meta['cargo_profile']}, "
        f"URLs: {meta['sis_scheme']})",
        f"- load average (1/5/15 min) at start: {meta['load_start']}, at end: {meta['load_end']} "
        f"(other processes on the machine share its cores; every process of this run ran at nice {meta['nice']})",
        f"- machine: {meta['nproc']} cores, {meta['cpu']}, {meta['mem']} RAM, Linux {meta['kernel']}; "
        "the load generator runs on the same cores",
        f"- load: wrk {meta['wrk']}, {meta['duration_s']} s per scenario, {meta['connections']} connections "
        f"(2 threads), all targets back to back in one run",
        f"- peers: nginx {meta['nginx']} + image_filter (worker_processes auto); "
        f"{meta['thumbor']} (PIL engine, file loader, one process per core, no result storage)",
        f"- sis: `sis server --cache-size {meta['sis_cache_size']}`; corpus: {meta['n2']} x 2 MP and "
        f"{meta['n12']} x 12 MP JPEG originals (plus 0.3 MP JPEG, PNG, GIF) made from scikit-image's photos",
        f"- raw limit (7) on the same file system as the server's data dir: {meta['limit_same_fs']}",
        "",
        "## Scenarios",
        "",
    ]
    for k, v in SCENARIOS.items():
        lines.append(f"- **{k}**: {v}")
    order = list(SCENARIOS)
    shown = sorted(rows, key=lambda r: order.index(r["scenario"]) if r["scenario"] in order else 99)
    lines += ["", "## Results", ""] + table(shown)
    lines += ["", "## Ratios vs the targets of issue 8", ""] + ratios(rows, checks, meta)
    lines += ["", "## Memory", ""] + memory(meta)
    if profile_path:
        hl = profile_highlights(profile_path)
        if hl:
            lines += ["", "## Profile highlights (full output: profile.txt)", ""] + hl
    lines += [
        "",
        "Notes: req/s = completed requests / wall time; errors = socket errors, timeouts (30 s) and "
        "non-2xx answers. CPU µs/req = CPU time (user + system) of the target's processes during its "
        "run / completed requests: nginx's and thumbor's workers included, the agent's rows include "
        "the server behind it; it does not depend on how much CPU wrk took, so it compares targets "
        "even on a busy machine. Cold-resize rotation: request k takes original k mod N; after each full pass "
        "the height grows by 1 px, so no (original, size) pair repeats. nginx image_filter keeps the "
        "aspect ratio, thumbor crops to fill, sis stretches: all answer a ~300x200 JPEG.",
        "",
    ]
    with open(out_path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def check(results_path):
    rows, checks = load(results_path)
    passed = failed = skipped = 0
    for r in rows:
        label = f"scenario {r['scenario']} {r['target']} c={r['conc']}"
        res = r.get("result")
        if res is None:
            if r["status"].startswith(SKIP_OK):
                skipped += 1
                print(f"SKIP {label}: {r['status']}")
            else:
                failed += 1
                print(f"FAIL {label}: {r['status']}")
        elif r["target"] not in OURS and res["requests"] == 0 and res["errors"] == 0:
            passed += 1  # a peer too slow to finish one request within a smoke-length run
            print(f"ok   {label}: no request completed in the run (slow peer), 0 errors")
        elif res["requests"] == 0 or (r["target"] in OURS and res["errors"] > 0):
            failed += 1
            print(f"FAIL {label}: {res['requests']} requests, {res['errors']} errors")
        else:
            passed += 1
            print(f"ok   {label}: {rps(r):.1f} req/s, {res['errors']} errors")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        report(*sys.argv[1:5])
