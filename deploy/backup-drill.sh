#!/usr/bin/env bash
# The backup drill: fills a fresh database with 1,000,000 journal records (1,000 events of
# 1,000 records, a snapshot each, a ticket type each) and 100,000 orders, straight with SQL
# (a recursive CTE on SQLite, generate_series on PostgreSQL; rows shaped like the node's:
# uuid ids, payloads of 96 to 159 pseudo-random bytes, which compress no better than real
# ones, 2 kB snapshots, VNPAY payment URLs), backs it up with
# `holdfast backup`, restores it onto another fresh database with `holdfast restore`, checks
# that every stock and every order matches (per-event journal aggregates, and checksums of
# the journal, the snapshots, the ticket types and the orders, source against restored), and
# prints the measured backup and restore times. BENCHMARKS.md ("Backup and restore") has the
# figures of this machine.
#
#   deploy/backup-drill.sh sqlite|postgres [JOURNAL_RECORDS [ORDERS]]
#
# The binary: HOLDFAST_BIN, else $CARGO_TARGET_DIR/debug/holdfast, else target/debug/holdfast
# (`cargo build --bin holdfast`). PostgreSQL: HOLDFAST_TEST_DATABASE_URL names a server where
# this user may create databases (default postgres://postgres@127.0.0.1:5432/postgres); the
# drill's two databases are dropped at the end. Needs sqlite3 or psql, and sha256sum.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=${1:?usage: deploy/backup-drill.sh sqlite|postgres [JOURNAL_RECORDS [ORDERS]]}
records=${2:-1000000}
orders=${3:-100000}
per_event=1000
events=$(( (records + per_event - 1) / per_event ))
bin=${HOLDFAST_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/holdfast}
[ -x "$bin" ] || { echo "no holdfast binary at $bin: cargo build --bin holdfast, or set HOLDFAST_BIN" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-drill-XXXXXX")
admin=${HOLDFAST_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
src_db="holdfast_drill_src_$$"
dst_db="holdfast_drill_dst_$$"
cleanup() {
  if [ "$backend" = postgres ]; then
    psql -q "$admin" -c "DROP DATABASE IF EXISTS $src_db WITH (FORCE)" -c "DROP DATABASE IF EXISTS $dst_db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n==> %s\n' "$*"; }

# Rows shaped like the node's. Ids are uuids derived from the row number, so both backends
# make the same ids; payloads and snapshots are pseudo-random bytes of real sizes.
base_ms=1767225600000 # 2026-01-01
case "$backend" in
  sqlite)
    src_url="sqlite://$work/src/holdfast.db"
    dst_url="sqlite://$work/dst/holdfast.db"
    mkdir -p "$work/src" "$work/dst"
    run_src() { sqlite3 -bail "$work/src/holdfast.db"; }
    fill_sql=$(cat <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
WITH RECURSIVE e(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM e WHERE n + 1 < $events)
INSERT INTO events (id, organizer_id, name, venue, starts_at, created_at)
SELECT printf('%08x-0000-4000-8000-%012x', n, n), '00000000-0000-4000-8000-00000000000a',
       'Concert ' || n, 'Hall ' || (n % 20), $base_ms + 86400000 * 30, $base_ms FROM e;
INSERT INTO ticket_types (event_id, position, code, name, price, currency, capacity, per_user_limit)
SELECT id, 0, 'GA', 'General admission', 500000, 'VND', 5000, 4 FROM events;
WITH RECURSIVE r(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM r WHERE n + 1 < $records)
INSERT INTO journal (event_id, seq, epoch, payload, written_at)
SELECT printf('%08x-0000-4000-8000-%012x', n / $per_event, n / $per_event), n % $per_event + 1, 1,
       randomblob(96 + n % 64), $base_ms + n * 7 FROM r;
INSERT INTO snapshots (event_id, seq, epoch, state, taken_at)
SELECT event_id, MAX(seq) - 100, 1, randomblob(2048), $base_ms FROM journal GROUP BY event_id;
WITH RECURSIVE o(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM o WHERE n + 1 < $orders)
INSERT INTO orders (id, user_id, email, event_id, hold_id, status, amount, currency, items,
                    hold_expires_at, payment_url, note, created_at, updated_at, phone)
SELECT printf('%08x-0001-4000-8000-%012x', n, n), printf('%08x-0002-4000-8000-%012x', n % 40000, n),
       'buyer' || (n % 40000) || '@example.com', printf('%08x-0000-4000-8000-%012x', n % $events, n % $events),
       printf('%08x-0003-4000-8000-%012x', n, n),
       CASE WHEN n % 20 < 14 THEN 'confirmed' WHEN n % 20 < 17 THEN 'cancelled'
            WHEN n % 20 < 19 THEN 'pending_payment' ELSE 'refunded' END,
       500000 * (1 + n % 4), 'VND', '[{"ticket_type":"GA","quantity":' || (1 + n % 4) || '}]',
       $base_ms + n * 11 + 900000,
       'https://sandbox.vnpayment.vn/paymentv2/vpcpay.html?vnp_Amount=' || (50000000 * (1 + n % 4))
         || '&vnp_Command=pay&vnp_TxnRef=' || printf('%08x-0001-4000-8000-%012x', n, n)
         || '&vnp_SecureHash=' || hex(randomblob(64)),
       NULL, $base_ms + n * 11, $base_ms + n * 11 + 60000, NULL FROM o;
COMMIT;
SQL
)
    # One line per table, the same text for the same rows on either side.
    fingerprint() {
      local db=$1
      sqlite3 -bail "$db" "SELECT event_id, COUNT(*), MAX(seq), SUM(LENGTH(payload)) FROM journal GROUP BY event_id ORDER BY event_id" | sha256sum | sed 's/ .*/  journal per event (count, last seq, bytes)/'
      sqlite3 -bail "$db" "SELECT event_id, seq, epoch, hex(payload), written_at FROM journal ORDER BY event_id, seq" | sha256sum | sed 's/ .*/  journal records/'
      sqlite3 -bail "$db" "SELECT event_id, seq, epoch, hex(state), taken_at FROM snapshots ORDER BY event_id" | sha256sum | sed 's/ .*/  snapshots/'
      sqlite3 -bail "$db" "SELECT event_id, code, price, capacity, per_user_limit FROM ticket_types ORDER BY event_id, code" | sha256sum | sed 's/ .*/  ticket types (capacity)/'
      sqlite3 -bail "$db" "SELECT id, status, amount, currency, items, event_id, hold_id, updated_at FROM orders ORDER BY id" | sha256sum | sed 's/ .*/  orders (status, amount, items)/'
      sqlite3 -bail "$db" "SELECT 'journal ' || COUNT(*) FROM journal; SELECT 'orders ' || COUNT(*) FROM orders"
    }
    src_file="$work/src/holdfast.db"
    dst_file="$work/dst/holdfast.db"
    backup_file="$work/holdfast.backup.db"
    ;;
  postgres)
    server=${admin%/*}
    src_url="$server/$src_db"
    dst_url="$server/$dst_db"
    psql -q -v ON_ERROR_STOP=1 "$admin" -c "CREATE DATABASE $src_db" -c "CREATE DATABASE $dst_db"
    run_src() { psql -q -v ON_ERROR_STOP=1 "$src_url" >/dev/null; }
    fill_sql=$(cat <<SQL
BEGIN;
INSERT INTO events (id, organizer_id, name, venue, starts_at, created_at)
SELECT format('%s-0000-4000-8000-%s', lpad(to_hex(n), 8, '0'), lpad(to_hex(n), 12, '0')),
       '00000000-0000-4000-8000-00000000000a', 'Concert ' || n, 'Hall ' || (n % 20),
       $base_ms + 86400000::bigint * 30, $base_ms FROM generate_series(0, $events - 1) AS n;
INSERT INTO ticket_types (event_id, position, code, name, price, currency, capacity, per_user_limit)
SELECT id, 0, 'GA', 'General admission', 500000, 'VND', 5000, 4 FROM events;
INSERT INTO journal (event_id, seq, epoch, payload, written_at)
SELECT format('%s-0000-4000-8000-%s', lpad(to_hex(n / $per_event), 8, '0'), lpad(to_hex(n / $per_event), 12, '0')),
       n % $per_event + 1, 1,
       decode(substr(md5(n || 'a') || md5(n || 'b') || md5(n || 'c') || md5(n || 'd') || md5(n || 'e')
                     || md5(n || 'f') || md5(n || 'g') || md5(n || 'h') || md5(n || 'i') || md5(n || 'j'),
                     1, 2 * (96 + n % 64)), 'hex'),
       $base_ms + n::bigint * 7 FROM generate_series(0, $records - 1) AS n;
INSERT INTO snapshots (event_id, seq, epoch, state, taken_at)
SELECT event_id, MAX(seq) - 100, 1,
       decode((SELECT string_agg(md5(event_id || i), '') FROM generate_series(1, 128) AS i), 'hex'),
       $base_ms FROM journal GROUP BY event_id;
INSERT INTO orders (id, user_id, email, event_id, hold_id, status, amount, currency, items,
                    hold_expires_at, payment_url, note, created_at, updated_at, phone)
SELECT format('%s-0001-4000-8000-%s', lpad(to_hex(n), 8, '0'), lpad(to_hex(n), 12, '0')),
       format('%s-0002-4000-8000-%s', lpad(to_hex(n % 40000), 8, '0'), lpad(to_hex(n), 12, '0')),
       'buyer' || (n % 40000) || '@example.com',
       format('%s-0000-4000-8000-%s', lpad(to_hex(n % $events), 8, '0'), lpad(to_hex(n % $events), 12, '0')),
       format('%s-0003-4000-8000-%s', lpad(to_hex(n), 8, '0'), lpad(to_hex(n), 12, '0')),
       CASE WHEN n % 20 < 14 THEN 'confirmed' WHEN n % 20 < 17 THEN 'cancelled'
            WHEN n % 20 < 19 THEN 'pending_payment' ELSE 'refunded' END,
       500000 * (1 + n % 4), 'VND', '[{"ticket_type":"GA","quantity":' || (1 + n % 4) || '}]',
       $base_ms + n::bigint * 11 + 900000,
       'https://sandbox.vnpayment.vn/paymentv2/vpcpay.html?vnp_Amount=' || (50000000 * (1 + n % 4))
         || '&vnp_Command=pay&vnp_TxnRef=' || n || '&vnp_SecureHash=' || repeat(md5(n::text), 4),
       NULL, $base_ms + n::bigint * 11, $base_ms + n::bigint * 11 + 60000, NULL
FROM generate_series(0, $orders - 1) AS n;
COMMIT;
ANALYZE;
SQL
)
    fingerprint() {
      local url=$1
      q() { psql -X -q -v ON_ERROR_STOP=1 "$url" -c "COPY ($1) TO STDOUT"; }
      q "SELECT event_id, COUNT(*), MAX(seq), SUM(LENGTH(payload)) FROM journal GROUP BY event_id ORDER BY event_id" | sha256sum | sed 's/ .*/  journal per event (count, last seq, bytes)/'
      q "SELECT event_id, seq, epoch, encode(payload, 'hex'), written_at FROM journal ORDER BY event_id, seq" | sha256sum | sed 's/ .*/  journal records/'
      q "SELECT event_id, seq, epoch, encode(state, 'hex'), taken_at FROM snapshots ORDER BY event_id" | sha256sum | sed 's/ .*/  snapshots/'
      q "SELECT event_id, code, price, capacity, per_user_limit FROM ticket_types ORDER BY event_id, code" | sha256sum | sed 's/ .*/  ticket types (capacity)/'
      q "SELECT id, status, amount, currency, items, event_id, hold_id, updated_at FROM orders ORDER BY id" | sha256sum | sed 's/ .*/  orders (status, amount, items)/'
      q "SELECT 'journal ' || COUNT(*) FROM journal UNION ALL SELECT 'orders ' || COUNT(*) FROM orders"
    }
    src_file=$src_url
    dst_file=$dst_url
    backup_file="$work/holdfast.backup.pgdump"
    ;;
  *) echo "backend: sqlite or postgres, not $backend" >&2; exit 2 ;;
esac

holdfast() { HOLDFAST_DATABASE_URL=$1 HOLDFAST_DATA_DIR=$work HOLDFAST_LOG=warn "$bin" "${@:2}"; }

step "creating the schema ($backend) and filling it: $records journal records of $events events, $orders orders"
holdfast "$src_url" migrate
t0=$(now)
printf '%s\n' "$fill_sql" | run_src
echo "filled in $(secs "$t0" "$(now)") s"

step "fingerprints of the source"
fingerprint "$src_file" | tee "$work/src.sums"

step "holdfast backup"
t0=$(now)
holdfast "$src_url" backup "$backup_file"
backup_secs=$(secs "$t0" "$(now)")
backup_size=$(du -h "$backup_file" | cut -f1)

step "holdfast restore onto a fresh database"
t0=$(now)
holdfast "$dst_url" restore "$backup_file"
restore_secs=$(secs "$t0" "$(now)")

step "fingerprints of the restored database"
fingerprint "$dst_file" | tee "$work/dst.sums"

if ! diff -u "$work/src.sums" "$work/dst.sums"; then
  echo "FAILED: the restored database differs from the source (diff above)" >&2
  exit 1
fi
step "drill passed ($backend): every stock and order matches"
echo "records: $records journal, $orders orders, $events events"
echo "backup:  $backup_secs s ($backup_size)"
echo "restore: $restore_secs s (copy or pg_restore, and the check)"
