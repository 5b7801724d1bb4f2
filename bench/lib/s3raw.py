#!/usr/bin/env python3
"""The raw S3 reference for the S3 rows (issue 12): the same bytes straight to the same RGW.

  s3raw.py urls --endpoint URL --bucket B --method PUT|GET --prefix P --count N --out FILE
      N pre-signed (SigV4, query string, UNSIGNED-PAYLOAD, path-style) URLs for keys
      P/000000 ... one per line (path + query), for wrk (lua/s3raw.lua).
  s3raw.py put --endpoint URL --bucket B --key K --file F
      PUT one object through a pre-signed URL (the raw GET row reads these back).
  s3raw.py bucket --endpoint URL --bucket B
      create the bucket (200, or 409 when it exists).

Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, region AWS_REGION (us-east-1).
Pre-signing is done here with hashlib/hmac (the standard library): no SDK in the request
path, so wrk measures RGW, not a Python client.
"""

import argparse
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse


def _q(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


def presign(endpoint, method, path, expires=3600, now=None):
    key = os.environ["AWS_ACCESS_KEY_ID"]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    region = os.environ.get("AWS_REGION", "us-east-1")
    u = urllib.parse.urlsplit(endpoint)
    host = u.netloc
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(params.items()))
    canonical_uri = _q(path, safe="-_.~/")
    creq = "\n".join([method, canonical_uri, query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])

    def h(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()

    k = h(h(h(h(("AWS4" + secret).encode(), day), region), "s3"), "aws4_request")
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return f"{canonical_uri}?{query}&X-Amz-Signature={sig}"


def request(endpoint, method, path_query, body=None):
    u = urllib.parse.urlsplit(endpoint)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request(method, path_query, body=body)
    r = c.getresponse()
    data = r.read()
    return r.status, data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["urls", "put", "bucket"])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--prefix", default="raw")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--key")
    ap.add_argument("--file")
    a = ap.parse_args()
    if a.what == "urls":
        with open(a.out, "w") as f:
            for i in range(a.count):
                f.write(presign(a.endpoint, a.method, f"/{a.bucket}/{a.prefix}/{i:06d}") + "\n")
    elif a.what == "put":
        with open(a.file, "rb") as f:
            body = f.read()
        st, data = request(a.endpoint, "PUT", presign(a.endpoint, "PUT", f"/{a.bucket}/{a.key}"), body)
        if st != 200:
            sys.exit(f"PUT {a.key}: HTTP {st} {data[:200]!r}")
    else:
        st, data = request(a.endpoint, "PUT", presign(a.endpoint, "PUT", f"/{a.bucket}"))
        if st not in (200, 409):
            sys.exit(f"create bucket {a.bucket}: HTTP {st} {data[:200]!r}")


if __name__ == "__main__":
    main()
