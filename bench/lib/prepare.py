#!/usr/bin/env python3
"""Write the URL lists the wrk scripts use, and load the corpus into sis.

  prepare.py peers --corpus DIR --out DIR
      nginx_*.txt and thumbor_*.txt: path templates ({W}/{H} placeholders), one per size class.
      Every target fits the image inside the W x H box, keeping its aspect ratio: nginx
      `image_filter resize`, thumbor `fit-in/WxH` (the form whose resize runs on a lazily
      loaded image, so PIL's draft mode picks libjpeg-turbo's scaled IDCT; thumbor's
      crop-to-fill form crops first, which loads the whole image at full scale whenever the
      box's aspect differs from the photo's), sis `fit=contain`.
  prepare.py sis --base http://127.0.0.1:P --corpus DIR --out DIR [--prefix sis]
      uploads every corpus image with the legacy multipart `POST /up` (a few files
      per request), checks that each returned MD5 is the MD5 of the bytes sent, picks
      the /v1 or the legacy URL scheme (whichever serves the first image back), and
      writes <prefix>_*.txt plus <prefix>_scheme.
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import urllib.parse
import uuid


def corpus_files(corpus, prefix, limit):
    names = sorted(n for n in os.listdir(corpus) if n.startswith(prefix + "_"))
    return names[:limit] if limit else names


def write(out, name, lines):
    with open(os.path.join(out, name), "w") as f:
        f.write("\n".join(lines) + "\n")


CLASSES = ("p03", "p1", "p2", "p12", "p24")


def peers(a):
    for tag in CLASSES:
        names = corpus_files(a.corpus, tag, 0)
        write(a.out, f"nginx_{tag}.txt", [f"/resize/{n}?w={{W}}&h={{H}}" for n in names])
        write(a.out, f"thumbor_{tag}.txt", [f"/unsafe/fit-in/{{W}}x{{H}}/{n}" for n in names])
        write(a.out, f"files_{tag}.txt", [os.path.join(a.corpus, n) for n in names])


def upload(conn, corpus, batch):
    boundary = "----sisbench" + uuid.uuid4().hex
    parts = []
    for n in batch:
        with open(os.path.join(corpus, n), "rb") as f:
            data = f.read()
        parts.append(
            (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
             f'filename="{n}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
            + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    conn.request("POST", "/up", body=body,
                 headers={"Content-Type": "multipart/form-data; boundary=" + boundary})
    r = conn.getresponse()
    text = r.read()
    if r.status != 200:
        raise SystemExit(f"sis upload: HTTP {r.status}: {text[:200]!r}")
    return json.loads(text)


def sis(a):
    u = urllib.parse.urlsplit(a.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    classes = tuple(a.only.split(",")) if a.only else CLASSES + ("png", "gif")
    names = [n for p in classes for n in corpus_files(a.corpus, p, 0)]
    # batches of up to 8 files and 24 MB (24 MP originals are ~10 MB each)
    batches, cur, size = [], [], 0
    for n in names:
        sz = os.path.getsize(os.path.join(a.corpus, n))
        if cur and (len(cur) == 8 or size + sz > 24_000_000):
            batches.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += sz
    if cur:
        batches.append(cur)
    md5 = {}
    for batch in batches:
        got = upload(conn, a.corpus, batch)
        if len(got) != len(batch):
            raise SystemExit(f"sis upload: {len(batch)} files sent, {len(got)} answers")
        for n, g in zip(batch, got):
            with open(os.path.join(a.corpus, n), "rb") as f:
                want = hashlib.md5(f.read()).hexdigest()
            if g.get("Name") != n or g.get("MD5") != want:
                raise SystemExit(f"sis upload: {n}: expected {want}, got {g}")
            md5[n] = want
    first = sorted(n for n in md5 if n.startswith("p2_"))[0]
    scheme = "legacy"
    conn.request("GET", f"/v1/images/{md5[first]}/{first}")
    r = conn.getresponse()
    r.read()
    if r.status == 200:
        scheme = "v1"

    def orig(n):
        if scheme == "v1":
            return f"/v1/images/{md5[n]}/{n}"
        return f"/full_down?md5={md5[n]}&file_name={n}"

    def resized(n):
        if scheme == "v1":
            return f"/v1/images/{md5[n]}/{n}?w={{W}}&h={{H}}&fit=contain"
        return f"/full_down?md5={md5[n]}&file_name={n}&w={{W}}&h={{H}}"

    p = a.prefix
    for tag in classes:
        ns = sorted(n for n in md5 if n.startswith(tag + "_"))
        write(a.out, f"{p}_{tag}.txt", [resized(n) for n in ns])
        write(a.out, f"{p}_{tag}_orig.txt", [orig(n) for n in ns])
    write(a.out, f"{p}_scheme", [scheme])
    print(f"sis: loaded {len(md5)} images, {scheme} URLs", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["peers", "sis"])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--base")
    ap.add_argument("--prefix", default="sis")
    ap.add_argument("--only", help="comma-separated classes to load (default: all)")
    ap.add_argument("--n2", type=int, default=0)
    ap.add_argument("--n12", type=int, default=0)
    a = ap.parse_args()
    peers(a) if a.what == "peers" else sis(a)


if __name__ == "__main__":
    main()
