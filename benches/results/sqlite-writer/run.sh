#!/usr/bin/env bash
# How the one SQLite writer is shared between the journal and the saga: one embedded node
# (SQLite, durability sync), holds with 30 % of them ordered, 64 connections for 15 s; then the
# node's holdfast_sqlite_write_wait_seconds histogram, per writer, as quantiles.
# Output next to this script: with-orders.json (the run) and write-wait.txt (the quantiles).
set -euo pipefail
cd "$(dirname "$0")"
S=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
B=${B:-../../../target/release}
rm -rf data && mkdir -p data
HOLDFAST_HTTP_ADDR=127.0.0.1:18282 HOLDFAST_OPS_ADDR=127.0.0.1:18283 HOLDFAST_DATA_DIR=data \
  HOLDFAST_JWT_SECRET=$S HOLDFAST_LOG=warn HOLDFAST_RATE_LIMITS=off \
  $B/holdfast serve > server.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf data server.log metrics.txt' EXIT
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18282/readyz >/dev/null && break; sleep 0.2; done
HOLDFAST_JWT_SECRET=$S $B/holdfast-bench run --url http://127.0.0.1:18282 --label with-orders \
  --server-pid $pid --duration 15s --connections 64 --quiet --out with-orders.json \
  --release-ratio 0.1 --order-ratio 0.3
curl -sf http://127.0.0.1:18283/metrics > metrics.txt
python3 - metrics.txt > write-wait.txt <<'PY'
import re, sys
buckets = {}
sums, counts = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r'holdfast_sqlite_write_wait_seconds_bucket\{(.*)\} (\S+)', line)
    if m:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        le = float('inf') if labels['le'] == '+Inf' else float(labels['le'])
        buckets.setdefault(labels['writer'], []).append((le, float(m.group(2))))
    m = re.match(r'holdfast_sqlite_write_wait_seconds_(sum|count)\{writer="(\w+)"\} (\S+)', line)
    if m:
        (sums if m.group(1) == 'sum' else counts)[m.group(2)] = float(m.group(3))

def quantile(bs, q):
    bs = sorted(bs)
    total = bs[-1][1]
    for le, c in bs:
        if c >= q * total:
            return le
    return float('inf')

def ms(v):
    return 'over 10 s' if v == float('inf') else f'≤ {v * 1000:g} ms'

print('| writer | turns | mean wait | p50 | p99 | p99.9 |')
print('|---|---:|---:|---:|---:|---:|')
for w in sorted(buckets, key=lambda w: -counts.get(w, 0)):
    n = counts.get(w, 0)
    mean = sums.get(w, 0) / n * 1000 if n else 0
    bs = buckets[w]
    print(f'| {w} | {int(n)} | {mean:.2f} ms | {ms(quantile(bs, .5))} | {ms(quantile(bs, .99))} | {ms(quantile(bs, .999))} |')
PY
cat write-wait.txt
