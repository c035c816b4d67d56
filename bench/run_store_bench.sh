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

if [[ ! -x "$BIN" ]]; then
  echo "run_store_bench: $BIN not found; build it with ./dev build release" >&2
  exit 1
fi
if [[ -z "${DCBD_TEST_PG_DSN:-}" ]]; then
  echo "run_store_bench: DCBD_TEST_PG_DSN is not set; run via ./dev bench store" >&2
  exit 1
fi
export DCB_POSTGRES_DSN="${DCB_POSTGRES_DSN:-$DCBD_TEST_PG_DSN}"

mkdir -p .bench
OUT=".bench/store-$(date +%Y%m%d-%H%M%S).txt"

run_all() {
  local rc=0
  echo "# dcbd store benchmark $(date -Iseconds)"
  local commit=unknown
  if commit="$(git -c safe.directory='*' rev-parse --short HEAD 2>/dev/null)"; then
    git -c safe.directory='*' diff --quiet HEAD 2>/dev/null || commit+=" (dirty)"
  else
    commit=unknown
  fi
  echo "# commit $commit"
  echo "# host $(nproc) cpus, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)," \
    "$(psql "$DCBD_TEST_PG_DSN" -XtAc 'SHOW server_version' 2>/dev/null | sed 's/^/PostgreSQL /')"
  echo "# dsn $DCBD_TEST_PG_DSN"
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
