#!/usr/bin/env bash
# Holds only, then holds with 30 % orders, on one fresh embedded node each (SQLite, durability
# sync), 64 connections for 15 s; the server's CPU per operation from /proc (--server-pid).
# Output next to this script: <label>.json, <label>.html.
set -euo pipefail
cd "$(dirname "$0")"
S=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
B=${B:-../../../target/release}
run() {
  local label=$1; shift
  rm -rf data-$label && mkdir -p data-$label
  HOLDFAST_HTTP_ADDR=127.0.0.1:18282 HOLDFAST_OPS_ADDR=127.0.0.1:0 HOLDFAST_DATA_DIR=data-$label \
    HOLDFAST_JWT_SECRET=$S HOLDFAST_LOG=warn HOLDFAST_RATE_LIMITS=off \
    $B/holdfast serve > server-$label.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18282/readyz >/dev/null && break; sleep 0.2; done
  HOLDFAST_JWT_SECRET=$S $B/holdfast-bench run --url http://127.0.0.1:18282 --label $label \
    --server-pid $pid --duration 15s --connections 64 --quiet --out $label.json --report $label.html "$@"
  kill $pid; wait $pid || true
  rm -rf data-$label server-$label.log
}
run holds-only --release-ratio 0.1
run with-orders --release-ratio 0.1 --order-ratio 0.3
