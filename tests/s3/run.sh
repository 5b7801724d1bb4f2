#!/usr/bin/env bash
# The S3 stage: a real single-node Ceph (mon, memstore OSD, RADOS Gateway) on loopback,
# then (1) the server API tests again on an S3-backed store and (2) the multi-replica,
# crash, fault and migration tests of tests/tests/s3.rs. Installs Ceph from Debian's
# packages when missing (ceph-s3.sh); stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir=$(mktemp -d /tmp/sis-ceph.XXXXXX)
cleanup() {
  bash tests/s3/ceph-s3.sh stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT

command -v curl >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q curl >/dev/null; }
start=$SECONDS
if ! started=$(bash tests/s3/ceph-s3.sh start "$dir" 2>&1); then
  echo "ceph did not start:"
  echo "$started" | tail -20
  tail -n 20 "$dir"/log/*.log 2>/dev/null
  exit 1
fi
env_lines=$(grep -E '^(S3_ENDPOINT|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY)=' <<<"$started")
eval "export ${env_lines//$'\n'/ ; export }"
echo "ceph up at $S3_ENDPOINT in $((SECONDS - start)) s"

bucket=sis-test
# Bucket creation is an admin step, not something sis does: a signed PUT with curl.
# RGW checks the payload hash header, which curl does not send by itself (empty body).
code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
  --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  -X PUT "$S3_ENDPOINT/$bucket")
[[ "$code" == 200 || "$code" == 409 ]] || { echo "create bucket: HTTP $code"; exit 1; }

export SIS_TEST_S3_ENDPOINT=$S3_ENDPOINT SIS_TEST_S3_BUCKET=$bucket SIS_TEST_CEPH_DIR=$dir
export AWS_REGION=us-east-1
# --workspace everywhere: the same feature resolution as the build and cargo-test stages, so
# nothing is compiled again (`-p sis` alone unifies features differently and rebuilds).
cargo build --workspace --locked
echo "--- server API tests on the S3 store"
cargo test --workspace --locked --test api
echo "--- replicas, crash, faults, migration"
cargo test --workspace --locked --test s3 -- --test-threads=1
