#!/usr/bin/env bash
# The whole purchase (BENCHMARKS.md, "The whole purchase (journey)"): one fresh node per run,
# on SQLite and on PostgreSQL, closed model with 64 connections for 10 s, then the open model at
# 80 % of that run's peak (256 connections: a journey keeps its connection from hold to
# tickets); the PostgreSQL order path of a monolith (baseline-pg) beside them, closed and open.
# Output: journey.json (every run) and journey.txt (the table), next to this script.
set -euo pipefail
cd "$(dirname "$0")/../../.."
B=${B:-target/release}
out=benches/results/journey
uptime | tee "$out/journey.txt"
"$B/holdfast-bench" journey --targets holdfast-sync,holdfast-pg,baseline-pg \
  --duration 10s --connections 64 --open-at 0.8 --open-connections 256 \
  --out "$out/journey.json" "$@" | tee -a "$out/journey.txt"
uptime | tee -a "$out/journey.txt"
