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
    "3": "cold resize: 3/CLASS/WxH fits a CLASS JPEG (p1 1.2 MP, p2 2 MP, p12 12 MP, p24 24 MP; "
         "p03 0.3 MP in smoke runs) inside a WxH box, a different original (or size) each request",
    "5": "multipart upload of a unique ~200 KB JPEG",
    "6.1": "(6) scenario 1 through the agent",
    "6.2": "(6) scenario 2 through the agent",
    "6.3": "(6) scenario 3 (2 MP into a 302x200 box, sizes the server has not made) through the agent",
    "7": "raw write + fsync + rename of the same bytes, same concurrency, same file system "
         "(the upload limit; 'raw + dir fsync' also fsyncs the directory after the rename, informational)",
    "8.1": "(S3, issue 12) multipart upload of a unique ~200 KB JPEG to sis over S3 vs a raw pre-signed "
           "PUT of the same JPEG straight to the same RGW",
    "8.2": "(S3) cold read of a 2 MP original (--cache-size 0, rotating over the originals): sis over disk, "
           "sis over S3, raw pre-signed GET of the same bytes from the same RGW",
    "8.3": "(S3) cold resize 2 MP -> 300x200 box (--cache-size 0): sis over disk vs sis over S3",
}
OURS = {"sis", "agent", "sis s3", "sis disk"}
CLASS_NAME = {"p03": "0.3 MP", "p1": "1.2 MP", "p2": "2 MP", "p12": "12 MP", "p24": "24 MP"}


def cold_label(scen):
    _, cls, box = scen.split("/")
    return f"{CLASS_NAME.get(cls, cls)} -> {box}"
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


def per_process(r):
    """CPU seconds of each busy process of the target during the run, busiest first
    (nginx workers, thumbor processes, sis): shows every peer used every core."""
    procs = r.get("cpu_procs")
    if not procs:
        return ""
    busy = [p for p in procs if p[2] >= 50_000][:6]
    return " ".join(f"{p[2] / 1e6:.1f}" for p in busy)


def table(rows):
    out = ["| scenario | target | conc | req/s | p50 ms | p99 ms | errors | requests | CPU µs/req "
           "| CPU s per process |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        res = r.get("result")
        name = f"{r['scenario']}"
        if name.startswith("3/"):
            name = f"3 {cold_label(name)}"
        if res:
            out.append(f"| {name} | {r['target']} | {r['conc']} | {rps(r):.1f} | "
                       f"{fmt_ms(res['p50_us'])} | {fmt_ms(res['p99_us'])} | {res['errors']} | "
                       f"{res['requests']} | {cpu_per_request(r)} | {per_process(r)} |")
        else:
            out.append(f"| {name} | {r['target']} | {r['conc']} | {r['status']} | | | | | | |")
    return out


def cold_rows(rows, checks):
    """Per-size cold-resize rows: req/s and CPU per request of each target, the ratio
    sis / best peer (goal 2x), and sis's CPU against the djpeg floor of the same files."""
    scens = []
    for r in rows:
        if r["scenario"].startswith("3/") and r["scenario"] not in scens:
            scens.append(r["scenario"])
    if not scens:
        return []
    floors = {k["scenario"]: k.get("cpu_us") for k in checks if k["check"] == "djpeg"}
    out = ["| source -> box | sis req/s | nginx req/s | thumbor req/s | sis / best peer (≥ 2×) | "
           "CPU ms/req sis / nginx / thumbor | djpeg floor ms | sis CPU / floor |",
           "|---|---:|---:|---:|---:|---|---:|---:|"]
    for sc in scens:
        def get(t):
            r = find(rows, sc, t)
            return r, (rps(r) if r else None)
        (rs, vs), (rn, vn), (rt, vt) = get("sis"), get("nginx image_filter"), get("thumbor")
        peers = [x for x in (vn, vt) if x]
        best = max(peers) if peers else None
        if vs and best:
            x = vs / best
            ratio = f"{x:.2f}× {'met' if x >= 2.0 else 'missed'}"
        else:
            ratio = "n/a"

        def cpu_ms(r):
            if not r or not r.get("result") or r.get("cpu_us") is None or not r["result"]["requests"]:
                return "–"
            return f"{r['cpu_us'] / r['result']['requests'] / 1000:.1f}"
        fl = floors.get(sc)
        fl_s = f"{fl / 1000:.1f}" if fl else "–"
        rel = "–"
        if fl and rs and rs.get("result") and rs.get("cpu_us") and rs["result"]["requests"]:
            rel = f"{rs['cpu_us'] / rs['result']['requests'] / fl:.2f}×"
        f = lambda v: f"{v:.1f}" if v else "–"
        out.append(f"| {cold_label(sc)} | {f(vs)} | {f(vn)} | {f(vt)} | {ratio} | "
                   f"{cpu_ms(rs)} / {cpu_ms(rn)} / {cpu_ms(rt)} | {fl_s} | {rel} |")
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
    cold = sorted({r["scenario"] for r in rows if r["scenario"].startswith("3/")},
                  key=lambda sc: [r["scenario"] for r in rows].index(sc))
    for s in cold:
        peers = [x for x in (v(s, "nginx image_filter"), v(s, "thumbor")) if x]
        best = max(peers) if peers else None
        out.append(ratio_line(f"(3) cold resize {cold_label(s)}: sis / best(nginx, thumbor)",
                              v(s, "sis"), best, 2.0))
    r2 = find(rows, "3/p2/300x200", "sis")
    if r2 and r2.get("result") and r2.get("cpu_us") is not None and r2["result"]["requests"]:
        ms = r2["cpu_us"] / r2["result"]["requests"] / 1000
        out.append(f"| (3) sis server CPU per 2 MP -> 300x200 | {ms:.1f} ms | ≤ 4 ms | "
                   f"{'met' if ms <= 4.0 else 'missed'} |")
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
    for conc in sorted({1, c}):
        a, b = v("8.1", "sis s3", conc), v("8.1", "raw RGW PUT", conc)
        if a is not None or find(rows, "8.1", "sis s3") is not None:
            out.append(ratio_line(f"(8.1) S3 upload c={conc}: sis s3 / raw RGW PUT", a, b, 0.7))
    if find(rows, "8.2", "sis s3") is not None:
        out.append(ratio_line("(8.2) S3 cold original: sis s3 / raw RGW GET", v("8.2", "sis s3"),
                              v("8.2", "raw RGW GET"), 0.8))
        for sc, what in (("8.2", "cold original"), ("8.3", "cold resize")):
            a, b = v(sc, "sis s3"), v(sc, "sis disk")
            if a and b:
                out.append(f"| (info) {what}: sis s3 / sis disk | {a / b:.2f}× | | |")
    base3 = next((sc for sc in ("3/p2/300x200", "3/p03/300x200") if find(rows, sc, "sis")), "3")
    for s, base in (("6.1", "1"), ("6.2", "2"), ("6.3", base3)):
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
    for name, key in (("sis server", "rss_server_kib"), ("sis agent", "rss_agent_kib"),
                      ("sis server over S3 (--cache-size 0)", "rss_s3_kib")):
        kib = meta.get(key, 0)
        if key == "rss_s3_kib":
            if not kib:
                continue
            verdict = "met" if kib <= 64 * 1024 else "missed"
            out.append(f"| {name} | {kib / 1024:.1f} MiB | 64 MiB | {verdict} |")
            continue
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
        "# sis benchmark: latest run" + (" (SMOKE: 1 s runs, dev build, cold resizes of 0.3 MP and "
                                          "2 MP originals only: checks the harness, measures nothing)"
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
        f"{meta['thumbor']} (PIL engine, file loader, no result storage, one process per core each on "
        f"its own SO_REUSEPORT socket via --fd, `fit-in` URLs so PIL's draft mode scales the JPEG decode)",
        f"- sis: `sis server --cache-size {meta['sis_cache_size']}`, `fit=contain`; corpus "
        f"(made from scikit-image's photos with sensor noise): {meta['corpus']}",
        f"- cold-resize rows: {meta['cold_duration_s']} s each; the other scenarios {meta['duration_s']} s",
        f"- raw limit (7) on the same file system as the server's data dir: {meta['limit_same_fs']}",
        "",
        "## Scenarios",
        "",
    ]
    for k, v in SCENARIOS.items():
        lines.append(f"- **{k}**: {v}")
    order = list(SCENARIOS)
    def rank(r):
        sc = r["scenario"].split("/")[0]
        return order.index(sc) if sc in order else 99
    shown = sorted(rows, key=rank)
    lines += ["", "## Results", ""] + table(shown)
    cr = cold_rows(rows, checks)
    if cr:
        lines += ["", "## Cold resizes per size (issue 13)", "",
                  "djpeg floor: mean CPU time of `djpeg -scale 1/N` (N: the DCT reduction sis picks "
                  "for the box) on every file of the class, minus djpeg's start-up (timed on a "
                  "16x16 JPEG), measured in the same run: the entropy decode no server can skip (djpeg also "
                  "converts colours and writes PPM, so a server can come in a little under it).", ""] + cr
    lines += ["", "## Ratios vs the targets of issues 8 and 13", ""] + ratios(rows, checks, meta)
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
        "the height grows by 1 px, so no (original, size) pair repeats. All three fit the photo inside "
        "the box keeping its aspect ratio (nginx image_filter resize, thumbor fit-in, sis fit=contain) "
        "and answer a JPEG at quality 80. CPU s per process: each busy process of the target "
        "(>= 0.05 s) during the run.",
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
