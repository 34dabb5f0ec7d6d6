#!/usr/bin/env bash
# The waiting room at crowd size (BENCHMARKS.md, "The waiting room"): the hold throughput and
# the no-op baseline's CPU per request first (holdfast-bench compare, the same harness and
# machine), then `holdfast-bench queue` with 100,000 buyers and 10,000 (the fairness sample).
# DIR holds a release `holdfast` and `holdfast-bench`:  run.sh target/release
# Output: compare.json, queue-100k.json, queue-10k.json next to this script, and their text.
set -euo pipefail
dir=$(cd "${1:-target/release}" && pwd)
cd "$(dirname "$0")"
"$dir/holdfast-bench" compare --targets holdfast-sync,baseline-noop --duration 10s \
  --connections 64 --holdfast-bin "$dir/holdfast" --out compare.json | tee compare.txt
"$dir/holdfast-bench" queue --users 100000 --capacity 5000 --admit-per-minute 60000 \
  --active-max 1000 --poll-window 10s --poll-interval 2s --sale-duration 60s --connections 64 \
  --holdfast-bin "$dir/holdfast" --out queue-100k.json | tee queue-100k.txt
"$dir/holdfast-bench" queue --users 10000 --capacity 2000 --admit-per-minute 6000 \
  --active-max 200 --poll-window 10s --poll-interval 1s --sale-duration 60s --connections 64 \
  --holdfast-bin "$dir/holdfast" --out queue-10k.json | tee queue-10k.txt
