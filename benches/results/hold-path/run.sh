#!/usr/bin/env bash
# The hold path beside the no-op baseline (BENCHMARKS.md, "The hold path"): holdfast-sync and
# baseline-noop, 64 connections, 10 s each, each build twice in turn. Give each build as
# LABEL=DIR, DIR holding a release `holdfast` and `holdfast-bench` built from the commit to
# compare, e.g.  run.sh before=/tmp/a/release writer=/tmp/b/release mimalloc=target/release
# Output: <label>-<n>.json next to this script; table.py prints the table.
set -euo pipefail
cd "$(dirname "$0")"
for round in 1 2; do
  for build in "$@"; do
    label=${build%%=*} dir=${build#*=}
    "$dir/holdfast-bench" compare --targets holdfast-sync,baseline-noop --duration 10s \
      --connections 64 --holdfast-bin "$dir/holdfast" --out "$label-$round.json" >/dev/null
  done
done
python3 table.py
