#!/usr/bin/env bash
# Cluster numbers for BENCHMARKS.md, with real processes on loopback and one PostgreSQL:
#   1. throughput of 1, 2 and 3 nodes on many events (holdfast-bench run against node 1; the
#      other nodes' shards are reached through node 1's forwarding);
#   2. handoff pause of live shard moves under a hot-event load (p50/p99 over the moves);
#   3. failover time after `kill -9` of the owner of a hot event under load.
# Usage: benches/cluster.sh [seconds per load run]   (builds nothing: run
#   cargo build --release -p holdfast-engine -p holdfast-bench first)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
bin=target/release/holdfast
bench=target/release/holdfast-bench
out=target/cluster-bench
pg_admin=${HOLDFAST_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
pg_server=${pg_admin%/*}
# Fresh secrets per run, shared by the nodes (a node refuses the ones the project publishes).
random_hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export HOLDFAST_JWT_SECRET=$(random_hex) HOLDFAST_TICKET_SIGNING_KEY=$(random_hex)
export HOLDFAST_VNPAY_TMN_CODE=BENCH HOLDFAST_VNPAY_HASH_SECRET=$(random_hex)
mkdir -p "$out"
pids=()

cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT

fresh_db() {
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS holdfast_cluster_bench WITH (FORCE)" -c "CREATE DATABASE holdfast_cluster_bench"
  export HOLDFAST_DATABASE_URL="$pg_server/holdfast_cluster_bench"
}

start_nodes() { # n
  for i in $(seq 1 "$1"); do
    HOLDFAST_NODE_ID=n$i HOLDFAST_HTTP_ADDR=127.0.0.1:1808$i HOLDFAST_INTERNAL_ADDR=127.0.0.1:1707$i HOLDFAST_OPS_ADDR=127.0.0.1:1909$i \
      HOLDFAST_DATA_DIR="$out/n$i" HOLDFAST_SHARDS=64 HOLDFAST_LEASE_SECS=3 HOLDFAST_LOG=warn \
      "$bin" serve >>"$out/n$i.log" 2>&1 &
    pids+=($!); disown
    for _ in $(seq 1 100); do curl -sf "127.0.0.1:1808$i/readyz" >/dev/null && break; sleep 0.1; done
  done
}

admin_token() {
  local email="admin-$RANDOM$RANDOM@example.com"
  printf 'bench admin password' | "$bin" users add "$email" --role admin --password-stdin 2>/dev/null
  curl -s 127.0.0.1:18081/v1/auth/login -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"bench admin password\"}" | python3 -c 'import sys,json;print(json.load(sys.stdin)["access_token"])'
}

summary() { # result.json
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
h = r["latency"]["hold"]
print(f'{r["holds_per_sec"]:.0f} holds/s, p50 {h["p50_ms"]:.2f} ms, p99 {h["p99_ms"]:.2f} ms, max {h["max_ms"]:.1f} ms, errors {r["errors"]}, audit {"ok" if not r["audit"].get("violations") else "VIOLATIONS"}')
PY
}

echo "== throughput on 64 events, $secs s, 64 connections, against node 1"
for n in 1 2 3; do
  fresh_db; start_nodes "$n"
  HOLDFAST_URL=http://127.0.0.1:19091 HOLDFAST_TOKEN=$(admin_token) "$bin" shards rebalance >/dev/null
  "$bench" run --url http://127.0.0.1:18081 --events 64 --duration "${secs}s" --connections 64 \
    --quiet --label "cluster-$n" --out "$out/throughput-$n.json" >/dev/null
  echo "$n node(s): $(summary "$out/throughput-$n.json")"
  cleanup
done

echo "== handoff pause: a hot event's shard moved 20 times under load (3 nodes)"
fresh_db; start_nodes 3
export HOLDFAST_URL=http://127.0.0.1:19091 HOLDFAST_TOKEN=$(admin_token)
"$bin" shards rebalance >/dev/null
"$bench" run --url http://127.0.0.1:18082 --events 1 --duration "$((secs + 10))s" --connections 32 \
  --quiet --label handoff --out "$out/handoff.json" >/dev/null &
load=$!
sleep 3
shard=$("$bin" shards list --json | python3 -c 'import sys,json;print(next(s["shard"] for s in json.load(sys.stdin)["shards"] if s["events"]>0))')
: >"$out/pauses.txt"
for k in $(seq 1 20); do
  to=n$(( (k % 3) + 1 ))
  "$bin" shards move "$shard" "$to" | sed -n 's/.*paused \([0-9]*\) ms.*/\1/p' >>"$out/pauses.txt" || true
  sleep 0.3
done
wait "$load"
python3 - "$out/pauses.txt" <<'PY'
import sys
p = sorted(int(x) for x in open(sys.argv[1]) if x.strip())
q = lambda f: p[min(len(p) - 1, int(round(f * (len(p) - 1))))]
print(f"{len(p)} moves: pause p50 {q(0.5)} ms, p99 {q(0.99)} ms, max {p[-1]} ms (server side: gate closed → epoch handed over)")
PY
echo "load during the moves: $(summary "$out/handoff.json")"
cleanup

echo "== failover: kill -9 of the hot event's owner under load (3 nodes, 3 s lease)"
fresh_db; start_nodes 3
export HOLDFAST_TOKEN=$(admin_token)
"$bin" shards rebalance >/dev/null
"$bench" run --url http://127.0.0.1:18081 --events 1 --duration "$((secs + 10))s" --connections 32 \
  --quiet --label failover --out "$out/failover.json" >/dev/null &
load=$!
sleep 3
shard=$("$bin" shards list --json | python3 -c 'import sys,json;print(next(s["shard"] for s in json.load(sys.stdin)["shards"] if s["events"]>0))')
owner=$("$bin" shards list --json | python3 -c "import sys,json;print(next(s['owner'] for s in json.load(sys.stdin)['shards'] if s['shard']==$shard))")
if [ "$owner" = n1 ]; then "$bin" shards move "$shard" n2 >/dev/null; owner=n2; fi
event=$(curl -s 127.0.0.1:18081/v1/events | python3 -c 'import sys,json;print(json.load(sys.stdin)[0]["id"])')
sleep 2
victim=${pids[$(( ${owner#n} - 1 ))]}
t0=$(date +%s.%N)
kill -9 "$victim"
until [ "$("$bin" shards list --json | python3 -c "import sys,json;print(next(s['owner'] for s in json.load(sys.stdin)['shards'] if s['shard']==$shard))")" != "$owner" ]; do sleep 0.05; done
t1=$(date +%s.%N)
until curl -sf "127.0.0.1:18081/v1/events/$event/availability" >/dev/null; do sleep 0.05; done
t2=$(date +%s.%N)
wait "$load" || true
python3 -c "print(f'shard {$shard} claimed {($t1-$t0):.2f} s after kill -9, event served again after {($t2-$t0):.2f} s (lease 3 s)')"
echo "load across the failover: $(summary "$out/failover.json")"
