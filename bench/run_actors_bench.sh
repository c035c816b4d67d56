#!/usr/bin/env bash
# Actor benchmark suite (`./dev bench actors`): the raw PostgreSQL baseline,
# the benchmarks through the actors (bench/actors_bench.cpp), then the
# baseline again to show drift, and the targets checked against both.
# Everything is saved to .bench/actors-<timestamp>.txt and printed.
#
# usage: bench/run_actors_bench.sh [google-benchmark args...] [CAF options,
#          e.g. --work-stealing.moderate-poll-attempts=0]
# env:   DCBD_TEST_PG_DSN (set by ./dev), BASELINE_SECONDS (default 10),
#        BASELINE_PRELOAD (baseline table rows, default 10134),
#        REPS (benchmark repetitions, default 3),
#        DCBD_ACTORS_BENCH (the benchmark binary; default: this build's, set
#        it to another build's to compare before and after in one session)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN="${DCBD_ACTORS_BENCH:-build/release/bench/dcbd_actors_bench}"
BASELINE_SECONDS="${BASELINE_SECONDS:-10}"
REPS="${REPS:-3}"
# The baseline table starts each workload with as many rows as the actor
# benchmark's dataset.
export BASELINE_PRELOAD="${BASELINE_PRELOAD:-10134}"

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_require actors "$BIN"
TMP="$(mktemp -d -t run_actors_bench.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

# summary_value NAME KEY: from the benchmark's `summary` lines
summary_value() {
  awk -v name="$1" -v key="$2" '
    $1 == "summary" && $2 == name {
      for (i = 3; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == key) { print kv[2]; exit }
      }
    }' "$TMP/actors.txt"
}

# target LABEL VALUE OP LIMIT: one line, "ok" or "MISSED" ("n/a" without data)
target() {
  local label="$1" value="$2" op="$3" limit="$4"
  if [[ -z "$value" || -z "$limit" ]]; then
    printf '  %-70s n/a\n' "$label"
    return 0
  fi
  awk -v l="$label" -v v="$value" -v op="$op" -v lim="$limit" 'BEGIN {
    ok = (op == ">=") ? (v >= lim) : (v <= lim)
    printf "  %-70s %10.1f %s %-10.1f %s\n", l, v, op, lim, ok ? "ok" : "MISSED"
  }'
}

# info LABEL VALUE: a number to read the targets against
info() {
  printf '  %-70s %10s\n' "$1" "${2:-n/a}"
}

targets() {
  local c16 c1lat name
  echo "## targets (medians; baseline before / after)"
  for phase in before after; do
    c16="$(baseline_value "$TMP/$phase.txt" single_c16 tps)"
    c1lat="$(baseline_value "$TMP/$phase.txt" single_c1 latency_ms)"
    echo "# baseline $phase: single_c16 tps=${c16:-?} single_c1 latency_ms=${c1lat:-?}"
    name=BM_ConditionalAppend/callers:100/real_time
    target "$phase: cond. append, 100 callers, calls/s >= 15000" \
      "$(summary_value "$name" calls/s)" ">=" 15000
    target "$phase: cond. append, 100 callers, calls/s >= 2x single_c16" \
      "$(summary_value "$name" calls/s)" ">=" \
      "$([[ -n "$c16" ]] && awk -v t="$c16" 'BEGIN { print 2 * t }')"
    for name in BM_Append/callers:1/events:1/real_time \
      BM_BlockingAppend/events:1/real_time; do
      target "$phase: ${name%%/real_time} p50_us <= 1.3x single_c1" \
        "$(summary_value "$name" p50_us)" "<=" \
        "$([[ -n "$c1lat" ]] && awk -v l="$c1lat" 'BEGIN { print 1.3 * l * 1000 }')"
    done
    name=BM_Append/callers:1/events:1/real_time
    target "$phase: ${name%%/real_time} round_p50_us <= 1.3x single_c1" \
      "$(summary_value "$name" round_p50_us)" "<=" \
      "$([[ -n "$c1lat" ]] && awk -v l="$c1lat" 'BEGIN { print 1.3 * l * 1000 }')"
  done
  for name in BM_Project/callers:1/real_time BM_BlockingProject/real_time; do
    # issue 13: 5x go-crablet's 1,785 projections/s on this machine
    target "${name%%/real_time} calls/s >= 9000" \
      "$(summary_value "$name" calls/s)" ">=" 9000
  done
  for name in BM_Query/callers:1/real_time BM_BlockingQuery/real_time; do
    target "${name%%/real_time} calls/s >= 6300" \
      "$(summary_value "$name" calls/s)" ">=" 6300
  done
  echo "# the bare store on the benchmark thread, no actors (the floor):"
  info "BM_DirectAppend/events:1 p50_us" \
    "$(summary_value BM_DirectAppend/events:1/real_time p50_us)"
  info "BM_DirectConditionalAppend p50_us" \
    "$(summary_value BM_DirectConditionalAppend/real_time p50_us)"
  info "BM_DirectProject calls/s" \
    "$(summary_value BM_DirectProject/real_time calls/s)"
  info "BM_DirectQuery calls/s" \
    "$(summary_value BM_DirectQuery/real_time calls/s)"
}

run_all() {
  local rc=0
  bench_header "actors benchmark"
  echo
  echo "## baseline (before)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" | tee "$TMP/before.txt" || rc=1
  echo
  echo "## actors ($BIN, $REPS repetitions)"
  "$BIN" --benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true "$@" |
    tee "$TMP/actors.txt" || rc=1
  echo
  echo "## baseline (after, for drift)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" | tee "$TMP/after.txt" || rc=1
  echo
  targets
  return "$rc"
}

rc=0
run_all "$@" 2>&1 | tee "$OUT" || rc=$?
echo "run_actors_bench: saved to $OUT"
exit "$rc"
