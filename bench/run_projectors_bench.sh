#!/usr/bin/env bash
# Projector benchmark suite (`./dev bench projectors`): bench/projector_bench.cpp's
# workloads, a pgbench baseline of the same row updates before and after the
# catch-up, then the targets of the projector issue checked against the
# figures of the same run. Saved to .bench/projectors-<timestamp>.txt and
# printed.
#
# usage: bench/run_projectors_bench.sh [workload...]   (catchup lag takeover;
#          default: all)
# env:   DCBD_TEST_PG_DSN (set by ./dev), CATCHUP_EVENTS (1000000),
#        CATCHUP_SETUP_BATCH (1000), BASELINE_SECONDS (10), LAG_RATE (5000), LAG_SECONDS (10),
#        LAG_THREADS (4), TAKEOVER_ROUNDS (10), DCBD_PROJECTOR_BENCH (the
#        binary; default: this build's), DCBD_COURSES (dcbd-courses; default:
#        this build's; takeover also runs on it when it exists)
#
# Baseline (pgbench -M prepared, 1 client, BASELINE_SECONDS): BEGIN; 500 x
# INSERT INTO course_seats VALUES ('c<random 0..999>', 1) ON CONFLICT
# (course) DO UPDATE SET subscribed = subscribed + 1; COMMIT -- the statement
# the per-event projector runs once per event, 500 per transaction as its
# batches; row updates/s = tps x 500.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN="${DCBD_PROJECTOR_BENCH:-build/release/bench/dcbd_projector_bench}"
COURSES="${DCBD_COURSES:-build/release/runtime/dcbd-courses}"
BASELINE_SECONDS="${BASELINE_SECONDS:-10}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_require projectors "$BIN"
TMP="$(mktemp -d -t run_projectors_bench.XXXXXX)"
BASE_SCHEMA=bench_projectors_pgbench
sql() { psql "$DCBD_TEST_PG_DSN" -X -q -v ON_ERROR_STOP=1 -tA "$@"; }
cleanup() {
  sql -c "DROP SCHEMA IF EXISTS $BASE_SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

WORKLOADS=("$@")
((${#WORKLOADS[@]} > 0)) || WORKLOADS=(catchup lag takeover)

# value NAME KEY, target LABEL VALUE OP LIMIT: see bench/lib.sh
value() { bench_value "$TMP/out.txt" "$1" "$2"; }
target() { bench_target "$@"; }

# ratio A B: A / B with 3 decimals, empty when either is missing
ratio() {
  [[ -n "$1" && -n "$2" ]] || return 0
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b }'
}

# upsert_baseline LABEL: pgbench of the per-event projector's statement.
upsert_baseline() {
  local label="$1" out="$TMP/pgbench-$1.out" tps lat
  sql <<SQL >/dev/null
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS $BASE_SCHEMA CASCADE;
CREATE SCHEMA $BASE_SCHEMA;
CREATE TABLE $BASE_SCHEMA.course_seats (course text PRIMARY KEY, subscribed bigint NOT NULL);
SQL
  {
    echo "BEGIN;"
    for ((i = 0; i < 500; i++)); do
      echo '\set c random(0, 999)'
      echo "INSERT INTO $BASE_SCHEMA.course_seats (course, subscribed) VALUES ('c' || :c, 1) ON CONFLICT (course) DO UPDATE SET subscribed = $BASE_SCHEMA.course_seats.subscribed + 1;"
    done
    echo "COMMIT;"
  } >"$TMP/upserts.sql"
  if ! pgbench -n -M prepared -c 1 -j 1 -T "$BASELINE_SECONDS" \
    -f "$TMP/upserts.sql" "$DCBD_TEST_PG_DSN" >"$out" 2>&1; then
    cat "$out" >&2
    echo "run_projectors_bench: pgbench failed" >&2
    return 1
  fi
  tps="$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\).*/\1/p' "$out")"
  lat="$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' "$out")"
  echo "baseline upserts_$label tps=$tps row_updates_per_s=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 500 }')" \
    "latency_ms=${lat:-?} statements_per_tx=500 courses=1000 seconds=$BASELINE_SECONDS"
}

run() {
  "$BIN" "$@" | tee -a "$TMP/out.txt"
}

{
  bench_header "projector benchmarks"
  echo "# workloads: ${WORKLOADS[*]}; CATCHUP_EVENTS=${CATCHUP_EVENTS:-1000000}" \
    "LAG_RATE=${LAG_RATE:-5000} LAG_SECONDS=${LAG_SECONDS:-10} TAKEOVER_ROUNDS=${TAKEOVER_ROUNDS:-10}"
  echo
  for w in "${WORKLOADS[@]}"; do
    case "$w" in
      catchup)
        upsert_baseline before | tee -a "$TMP/out.txt"
        run catchup
        upsert_baseline after | tee -a "$TMP/out.txt"
        ;;
      lag) run lag ;;
      takeover)
        run takeover
        if [[ -x "$COURSES" ]]; then
          # Someone else's binary: its failure is reported, not fatal.
          run takeover-courses "$COURSES" ||
            echo "summary takeover_courses n/a ($COURSES failed, see above)" | tee -a "$TMP/out.txt"
        else
          echo "summary takeover_courses n/a ($COURSES not built)" | tee -a "$TMP/out.txt"
        fi
        ;;
      *)
        echo "run_projectors_bench: unknown workload $w (catchup lag takeover)" >&2
        exit 2
        ;;
    esac
  done
  echo
  echo "# targets (same run)"
  pe="$(value catchup_per_event events_per_s)"
  pb="$(value catchup_per_batch events_per_s)"
  b0="$(value upserts_before row_updates_per_s)"
  b1="$(value upserts_after row_updates_per_s)"
  bm=""
  [[ -n "$b0" && -n "$b1" ]] && bm="$(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.0f", (a + b) / 2 }')"
  target "catch-up, one upsert per event / pgbench row updates (mean)" "$(ratio "$pe" "$bm")" ">=" 0.5
  # 1 when every projector of the workload ended with every course's count
  correct() {
    local a b
    a="$(value "$1" correct)" b="$(value "$2" correct)"
    [[ -n "$a" && -n "$b" ]] && echo $((a < b ? a : b))
    return 0
  }
  target "catch-up read models correct (both projectors)" "$(correct catchup_per_event catchup_per_batch)" ">=" 1
  target "live lag p99 (ms), one upsert per event" "$(value lag_per_event lag_ms_p99)" "<=" 50
  target "live lag p99 (ms), one statement per batch" "$(value lag_per_batch lag_ms_p99)" "<=" 50
  target "live read models correct (both projectors)" "$(correct lag_per_event lag_per_batch)" ">=" 1
  target "takeover after SIGKILL of the owner, p50 (ms)" "$(value takeover p50_ms)" "<=" 1500
  target "takeover, dcbd-courses nodes, p50 (ms)" "$(value takeover_courses p50_ms)" "<=" 1500
  if [[ -n "$pe" ]]; then
    echo "  catch-up of $(value catchup_per_event events) events (log $(value catchup_per_event log)):" \
      "one upsert per event $pe events/s, one statement per batch $pb events/s;" \
      "pgbench $b0 / $b1 row updates/s before / after (ratios $(ratio "$pe" "$b0") / $(ratio "$pe" "$b1"))"
  fi
  for v in per_event per_batch; do
    [[ -n "$(value lag_$v lag_ms_p50)" ]] || continue
    echo "  lag $v: $(value lag_$v events) events at $(value lag_$v achieved_rate)/s:" \
      "p50/p99/max $(value lag_$v lag_ms_p50) / $(value lag_$v lag_ms_p99) / $(value lag_$v lag_ms_max) ms," \
      "$(value lag_$v lag_events_p50) / $(value lag_$v lag_events_p99) / $(value lag_$v lag_events_max) events"
  done
  for t in takeover takeover_courses; do
    [[ -n "$(value $t p50_ms)" ]] || continue
    echo "  $t: $(value $t taken_over) of $(value $t rounds) rounds, p50 $(value $t p50_ms) ms," \
      "max $(value $t max_ms) ms, min $(value $t min_ms) ms"
  done
} | tee "$OUT"
echo "saved to $OUT"
