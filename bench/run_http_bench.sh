#!/usr/bin/env bash
# HTTP benchmark (`./dev bench http`): conditional single-event appends
# through POST /append with 100 keep-alive connections (wrk, each request on
# its own boundary), and GET /read of a 34-event result, against a dcbd
# node started here; the raw PostgreSQL baseline (pgbench single-row
# inserts, 16 clients) runs before and after. Then the one-caller latency:
# the same appends over 1 connection, against the same conditional append
# on the bare store from one thread (BM_DirectConditionalAppend of
# dcbd_actors_bench, the `Direct*` floor of `./dev bench actors`). Output
# goes to .bench/http-<timestamp>.txt.
#
# env: DCBD_TEST_PG_DSN (set by ./dev), SECONDS_PER_RUN (default 10),
#      CONNECTIONS (default 100), WRK_THREADS (default 2),
#      BASELINE_SECONDS (default 10), READ_CONNECTIONS (default "16 100"),
#      DCBD_NODE (the dcbd binary; default:
#      this build's, set it to another build's to compare before and after),
#      DCBD_NODE_ARGS (more flags for the node, e.g. --dcbd.read-lease-ms=1000),
#      DCBD_ACTORS_BENCH (default: this build's; the store-alone figure is
#      skipped when it is missing), STORE_REPS (its repetitions, default 3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN=build/release/runtime
NODE="${DCBD_NODE:-$BIN/dcbd}"
DURATION="${SECONDS_PER_RUN:-10}"
CONNECTIONS="${CONNECTIONS:-100}"
WRK_THREADS="${WRK_THREADS:-2}"
BASELINE_SECONDS="${BASELINE_SECONDS:-10}"
READ_CONNECTIONS="${READ_CONNECTIONS:-16 100}"
ACTORS_BENCH="${DCBD_ACTORS_BENCH:-build/release/bench/dcbd_actors_bench}"
STORE_REPS="${STORE_REPS:-3}"
read -r -a NODE_ARGS <<<"${DCBD_NODE_ARGS:-}"
SCHEMA=bench_http

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_require http "$NODE"
command -v wrk >/dev/null || {
  echo "run_http_bench: wrk is not installed (Debian package wrk)" >&2
  exit 1
}

TMP="$(mktemp -d -t run_http_bench.XXXXXX)"
NODE_PID=""
cleanup() {
  if [[ -n "$NODE_PID" ]]; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# wrk prints latencies with units; convert to microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) print n
    else if (v ~ /ms$/) print n * 1000
    else if (v ~ /s$/) print n * 1000000
    else print n
  }'
}

# Requests/s, p50 and p99 (us) from a wrk --latency output.
wrk_summary() {
  local rps p50 p99
  rps="$(awk '/^Requests\/sec:/ {print $2}' "$1")"
  p50="$(awk '$1 == "50%" {print $2}' "$1")"
  p99="$(awk '$1 == "99%" {print $2}' "$1")"
  echo "rps=${rps:-?} p50_us=$(to_us "${p50:-0}") p99_us=$(to_us "${p99:-0}")"
}

run() {
  bench_header "HTTP benchmark"
  echo "# node: $NODE"
  echo "# wrk: $WRK_THREADS threads, $CONNECTIONS connections, ${DURATION} s per run"
  echo "# node: $NODE --dcbd.max-streams=256 ${DCBD_NODE_ARGS:-}"
  echo
  echo "## baseline (before)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" | tee "$TMP/before.txt"

  psql_dsn -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null
  bench_start_node "$TMP/node.log" "$NODE" --dcbd.max-streams=256 \
    "${NODE_ARGS[@]}"
  local url="http://127.0.0.1:$HTTP_PORT" metrics_port="$METRICS_PORT"
  # 34 events on one tag for the read workload.
  local events
  events="$(python3 -c 'import json; print(json.dumps([{"type":"Read","tags":["read:34"],"data":"payload-%d" % i} for i in range(34)]))')"
  "$BIN/dcbctl" --url "$url" append --events "$events" >/dev/null

  echo
  echo "## POST /append, conditional, 1 event, own boundary per request"
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s bench/http_append.lua "$url" | tee "$TMP/append.txt"
  echo
  local q
  q="$(python3 -c 'import json, urllib.parse; print(urllib.parse.quote(json.dumps({"items":[{"types":["Read"],"tags":["read:34"]}]})))')"
  local c
  for c in $READ_CONNECTIONS; do
    echo "## GET /read, 34 events, $c connections"
    wrk -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --latency \
      -s bench/http_read.lua "$url/read?query=$q" | tee "$TMP/read-$c.txt"
    echo
  done
  cp "$TMP/read-${READ_CONNECTIONS##* }.txt" "$TMP/read.txt"
  # The very SELECT the node's store sends for that read (store/pg_read),
  # through pgbench with 16 clients: what PostgreSQL itself does.
  echo "## pgbench: the same SELECT, 16 clients, ${DURATION} s"
  cat >"$TMP/read.sql" <<SQL
SELECT h.position, e.position, e.type, e.tags, e.data, e.metadata, e.us FROM $SCHEMA.head h LEFT JOIN LATERAL (SELECT x.position, x.type, x.tags, x.data, x.metadata, (extract(epoch FROM x.recorded_at) * 1000000)::bigint AS us FROM $SCHEMA.events x WHERE x.position >= 1::bigint AND x.position <= 9223372036854775807::bigint AND ((x.type = ANY ('{Read}'::text[]) AND x.tags @> '{read:34}'::text[])) ORDER BY x.position LIMIT 10001::bigint) e ON true ORDER BY e.position;
SQL
  pgbench -n -M prepared -c 16 -j 2 -T "$DURATION" -f "$TMP/read.sql" \
    "$DCBD_TEST_PG_DSN" 2>&1 | grep -E '^(tps|latency average|number of failed)' \
    | tee "$TMP/read-pgbench.txt"
  echo
  echo "## event cache after the reads"
  curl -s "http://127.0.0.1:$metrics_port/metrics" \
    | grep -E '^dcb_(cache_reads_total|cache_bytes|cache_events|cache_waits_total|read_index_(rounds|reads|lease_reads)_total|read_index_max_batch|read_lease_[a-z_]+)' || true
  local returned
  returned="$(curl -s "$url/read?query=$q" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
  echo "# one GET /read returns $returned events"
  echo
  echo "## POST /append, conditional, 1 event, 1 connection (one caller)"
  wrk -t1 -c1 -d"${DURATION}s" --latency \
    -s bench/http_append.lua "$url" | tee "$TMP/append1.txt"
  echo
  echo "## node metrics after the runs"
  curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -E '^dcb_(append_requests_total|events_appended_total|group_size_requests_(sum|count)|store_reconnects_total)' || true
  kill -TERM "$NODE_PID"
  wait "$NODE_PID" || true
  NODE_PID=""
  psql_dsn -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null

  echo
  echo "## the store alone, one caller (BM_DirectConditionalAppend)"
  if [[ -x "$ACTORS_BENCH" ]]; then
    "$ACTORS_BENCH" --benchmark_filter='^BM_DirectConditionalAppend(/|$)' \
      --benchmark_repetitions="$STORE_REPS" \
      --benchmark_report_aggregates_only=true | tee "$TMP/store.txt"
  else
    echo "# $ACTORS_BENCH not built; skipped" | tee "$TMP/store.txt"
  fi

  echo
  echo "## baseline (after)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" | tee "$TMP/after.txt"

  echo
  echo "## summary"
  echo "append $(wrk_summary "$TMP/append.txt") $(grep -o 'errors=[0-9]* conflicts=[0-9]*' "$TMP/append.txt")"
  local sel
  sel="$(awk '/^tps/ {print $3}' "$TMP/read-pgbench.txt")"
  for c in $READ_CONNECTIONS; do
    echo "read c$c $(wrk_summary "$TMP/read-$c.txt") $(grep -o 'errors=[0-9]*' "$TMP/read-$c.txt") events_per_read=$returned"
    awk -v c="$c" -v r="$(awk '/^Requests\/sec:/ {print $2}' "$TMP/read-$c.txt")" -v b="$sel" 'BEGIN {
      printf "target: read c%s %.0f/s >= 2 x pgbench SELECT c16 %.0f tps = %.0f: %s (ratio %.2f)\n",
        c, r, b, 2 * b, (r >= 2 * b) ? "ok" : "MISSED", r / b
    }'
  done
  echo "append1 $(wrk_summary "$TMP/append1.txt") $(grep -o 'errors=[0-9]* conflicts=[0-9]*' "$TMP/append1.txt")"
  local store_p50 http_p50
  store_p50="$(bench_value "$TMP/store.txt" BM_DirectConditionalAppend/real_time p50_us)"
  http_p50="$(to_us "$(awk '$1 == "50%" {print $2}' "$TMP/append1.txt")")"
  echo "store  p50_us=${store_p50:-?} (BM_DirectConditionalAppend, median of $STORE_REPS)"
  if [[ -n "$store_p50" ]]; then
    awk -v h="$http_p50" -v s="$store_p50" 'BEGIN {
      printf "target: one-caller append p50 over HTTP %.0f us <= 1.3 x store alone %.0f us = %.0f: %s (ratio %.2f)\n",
        h, s, 1.3 * s, (h <= 1.3 * s) ? "ok" : "MISSED", h / s
    }'
  fi
  local rps c16 phase
  rps="$(awk '/^Requests\/sec:/ {print $2}' "$TMP/append.txt")"
  for phase in before after; do
    c16="$(baseline_value "$TMP/$phase.txt" single_c16 tps)"
    awk -v p="$phase" -v r="$rps" -v b="$c16" 'BEGIN {
      printf "target (%s): append %.0f/s >= 2 x baseline c16 %.0f tps = %.0f: %s (ratio %.2f)\n",
        p, r, b, 2 * b, (r >= 2 * b) ? "ok" : "MISSED", r / b
    }'
  done
}

run 2>&1 | tee "$OUT"
echo "run_http_bench: saved to $OUT"
