#!/usr/bin/env bash
# The fence's cost: server + PostgreSQL CPU per hold, single node vs the same node clustered
# (HOLDFAST_NODE_ID set, 64 shards), one hot event and 64 events, 64 connections, PostgreSQL.
# CPU is utime + stime from /proc/<pid>/stat of the server and of PostgreSQL, read
# just before and just after `holdfast-bench run` (setup of the events is inside the window; it
# is a few requests). Usage: benches/results/cluster-fence/run.sh [seconds] [label] [repeats]
#   (builds nothing: cargo build --release -p holdfast-engine -p holdfast-bench first)
set -euo pipefail
cd "$(dirname "$0")/../../.."
secs=${1:-10}
label=${2:-run}
repeats=${3:-1}
bin=${HOLDFAST_BIN:-target/release/holdfast}
bench=${HOLDFAST_BENCH_BIN:-target/release/holdfast-bench}
here=benches/results/cluster-fence
out=target/cluster-fence
pg_admin=${HOLDFAST_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
pg_server=${pg_admin%/*}
random_hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export HOLDFAST_JWT_SECRET=$(random_hex) HOLDFAST_TICKET_SIGNING_KEY=$(random_hex)
export HOLDFAST_VNPAY_TMN_CODE=BENCH HOLDFAST_VNPAY_HASH_SECRET=$(random_hex)
mkdir -p "$out"
server=""
cleanup() { [ -n "$server" ] && { kill -9 "$server"; wait "$server"; } 2>/dev/null || true; server=""; }
trap cleanup EXIT

# "pid ticks" for the server and PostgreSQL: the postmaster, its background processes and the
# sessions of the bench database (sessions of other databases on a shared server do not count).
cpu_ticks() {
  for p in "$server" $(pgrep -x postgres); do
    [ -r "/proc/$p/stat" ] || continue
    if [ "$p" != "$server" ]; then
      cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null || true)
      case "$cmd" in
        *holdfast_fence_bench*) ;;
        "postgres: "*" "*" "*"("*|"postgres: "*" "*" [local]"*) continue ;;
      esac
    fi
    # Fields after the command name: utime is the 14th field, stime the 15th.
    awk -v p="$p" '{ sub(/^.*\) /, ""); print p, $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true
  done
}

for rep in $(seq 1 "$repeats"); do
for events in 1 64; do
  for mode in single clustered; do
    psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS holdfast_fence_bench WITH (FORCE)" -c "CREATE DATABASE holdfast_fence_bench"
    rm -rf "$out/data"
    env=(HOLDFAST_DATABASE_URL="$pg_server/holdfast_fence_bench" HOLDFAST_DATA_DIR="$out/data"
         HOLDFAST_HTTP_ADDR=127.0.0.1:18181 HOLDFAST_OPS_ADDR=127.0.0.1:19191 HOLDFAST_LOG=warn
         HOLDFAST_RATE_LIMITS=off)
    if [ "$mode" = clustered ]; then
      env+=(HOLDFAST_NODE_ID=n1 HOLDFAST_INTERNAL_ADDR=127.0.0.1:17171 HOLDFAST_SHARDS=64 HOLDFAST_LEASE_SECS=3)
    fi
    env "${env[@]}" "$bin" serve >>"$out/server.log" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do curl -sf 127.0.0.1:18181/readyz >/dev/null && break; sleep 0.1; done
    cpu_ticks >"$out/before"
    "$bench" run --url http://127.0.0.1:18181 --events "$events" --duration "${secs}s" --connections 64 \
      --quiet --no-audit --label "$mode-$events" --out "$out/$mode-$events.json" >/dev/null
    cpu_ticks >"$out/after"
    python3 - "$out/before" "$out/after" "$out/$mode-$events.json" "$mode" "$events" "$label" "$(getconf CLK_TCK)" <<'PY' | tee -a "$here/results.txt"
import json, sys
before = dict(map(int, l.split()) for l in open(sys.argv[1]) if l.strip())
after = dict(map(int, l.split()) for l in open(sys.argv[2]) if l.strip())
ticks = sum(t - before.get(p, 0) for p, t in after.items())
r = json.load(open(sys.argv[3]))
tck = int(sys.argv[7])
us = ticks / tck * 1e6 / max(r["holds_ok"], 1)
print(f'{sys.argv[6]} {sys.argv[4]:9} events={sys.argv[5]:>2} holds={r["holds_ok"]} {r["holds_per_sec"]:.0f} holds/s '
      f'p99 {r["latency"]["hold"]["p99_ms"]:.1f} ms errors {r["errors"]} cpu {ticks / tck:.2f} s = {us:.1f} us/hold')
PY
    cleanup
    sleep 1
  done
done
done
