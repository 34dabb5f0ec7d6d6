#!/usr/bin/env bash
set -euo pipefail
S=bench-secret-0123456789abcdef0123456789
B=${B:-target/release}
label=$1; shift
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS bench_orders" -c "CREATE DATABASE bench_orders"
HOLDFAST_HTTP_ADDR=127.0.0.1:18282 HOLDFAST_DATABASE_URL=postgres://postgres@127.0.0.1/bench_orders HOLDFAST_VNPAY_TMN_CODE=BENCH HOLDFAST_VNPAY_HASH_SECRET=bench-vnpay-secret HOLDFAST_TICKET_SIGNING_KEY=9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60 HOLDFAST_JWT_SECRET=$S HOLDFAST_LOG=warn \
  $B/holdfast serve > server-$label.log 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18282/readyz >/dev/null && break; sleep 0.2; done
HOLDFAST_JWT_SECRET=$S $B/holdfast-bench run --url http://127.0.0.1:18282 --label $label \
  --duration 15s --connections 64 --quiet --out $label.json --report $label.html "$@"
kill $pid; wait $pid || true
