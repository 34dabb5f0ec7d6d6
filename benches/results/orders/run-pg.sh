#!/usr/bin/env bash
set -euo pipefail
S=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
B=${B:-target/release}
label=$1; shift
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS bench_orders" -c "CREATE DATABASE bench_orders"
HOLDFAST_HTTP_ADDR=127.0.0.1:18282 HOLDFAST_OPS_ADDR=127.0.0.1:0 HOLDFAST_DATABASE_URL=postgres://postgres@127.0.0.1/bench_orders HOLDFAST_VNPAY_TMN_CODE=BENCH HOLDFAST_VNPAY_HASH_SECRET=$S-vnpay HOLDFAST_TICKET_SIGNING_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n") HOLDFAST_JWT_SECRET=$S HOLDFAST_LOG=warn \
  $B/holdfast serve > server-$label.log 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18282/readyz >/dev/null && break; sleep 0.2; done
HOLDFAST_JWT_SECRET=$S $B/holdfast-bench run --url http://127.0.0.1:18282 --label $label \
  --duration 15s --connections 64 --quiet --out $label.json --report $label.html "$@"
kill $pid; wait $pid || true
