#!/usr/bin/env bash
# Store benchmark suite (`./dev bench store`): the raw PostgreSQL baseline,
# the store benchmarks, then the baseline again to show drift, all in one run.
# Everything is saved to .bench/store-<timestamp>.txt and printed.
#
# usage: bench/run_store_bench.sh [google-benchmark args...]
# env:   DCBD_TEST_PG_DSN (set by ./dev), BASELINE_SECONDS (default 10),
#        BASELINE_PRELOAD (baseline table rows, default 61000),
#        REPS (benchmark repetitions, default 3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN=build/release/bench/dcbd_store_bench
BASELINE_SECONDS="${BASELINE_SECONDS:-10}"
REPS="${REPS:-3}"
# The baseline table starts each workload with as many rows as the store
# benchmark's dataset (course domain, ~61k events).
export BASELINE_PRELOAD="${BASELINE_PRELOAD:-61000}"

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_require store "$BIN"

run_all() {
  local rc=0
  bench_header "store benchmark"
  echo
  echo "## baseline (before)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" || rc=1
  echo
  echo "## store ($BIN, $REPS repetitions)"
  "$BIN" --benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true "$@" || rc=1
  echo
  echo "## baseline (after, for drift)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" || rc=1
  return "$rc"
}

rc=0
run_all "$@" 2>&1 | tee "$OUT" || rc=$?
echo "run_store_bench: saved to $OUT"
exit "$rc"
