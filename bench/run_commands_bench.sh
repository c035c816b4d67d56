#!/usr/bin/env bash
# Commands over HTTP (`./dev bench commands`): the example node dcbd-courses
# runs its command define_course (POST /v1/commands/define_course, a course
# of its own per request: an empty decision model, then a conditional
# append) and, in the same run on the same node, the conditional append it
# stands on (POST /append on a fresh boundary, bench/http_append.lua), each
# with 100 connections and with one. The ratio command/append is what a
# command costs over the append it makes. Rounds alternate the two
# workloads (ROUNDS, default 3) on a machine that is noisy.
#
# Knobs: SECONDS_PER_RUN (10), CONNECTIONS (100), WRK_THREADS (2), ROUNDS,
# NODE_ARGS (extra node flags, e.g. --dcbd.cache-bytes=16777216 to meet a
# cache that has evicted the start of the log early).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN=build/release/runtime
NODE="${DCBD_NODE:-$BIN/dcbd-courses}"
DURATION="${SECONDS_PER_RUN:-10}"
CONNECTIONS="${CONNECTIONS:-100}"
WRK_THREADS="${WRK_THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
SCHEMA=bench_commands

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_require commands "$NODE"
command -v wrk >/dev/null || {
  echo "run_commands_bench: wrk is not installed (Debian package wrk)" >&2
  exit 1
}

TMP="$(mktemp -d -t run_commands_bench.XXXXXX)"
NODE_PID=""
cleanup() {
  if [[ -n "$NODE_PID" ]]; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

rps_of() {
  awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"
}

p50_of() {
  awk '$1 == "50%" {print $2}' "$1"
}

run() {
  bench_header "commands over HTTP benchmark"
  echo "# node: $NODE ${NODE_ARGS:-}; wrk: $WRK_THREADS threads, ${DURATION} s per run, $ROUNDS rounds"
  psql_dsn -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null
  local -a node_args=()
  read -r -a node_args <<<"${NODE_ARGS:-}"
  bench_start_node "$TMP/node.log" "$NODE" "${node_args[@]}"
  local url="http://127.0.0.1:$HTTP_PORT" r c w
  for ((r = 1; r <= ROUNDS; r++)); do
    for c in "$CONNECTIONS" 1; do
      for w in command append; do
        echo "## round $r: $w, $c connections"
        wrk -t"$([[ $c == 1 ]] && echo 1 || echo "$WRK_THREADS")" -c"$c" \
          -d"${DURATION}s" --latency -s "bench/http_$w.lua" "$url" \
          | tee "$TMP/$w-c$c-$r.txt"
        echo
      done
    done
  done
  echo "## the node's cache at the end"
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" \
    | grep -E '^dcb_cache_(lo|hi|evicted_total|summary_[a-z_]+|reads_total\{.*route="project")' \
    || true
  echo
  kill -TERM "$NODE_PID"
  wait "$NODE_PID" || true
  NODE_PID=""
  psql_dsn -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null

  echo "## summary (requests/s, p50; ratio command/append per round)"
  for c in "$CONNECTIONS" 1; do
    for ((r = 1; r <= ROUNDS; r++)); do
      local cmd app
      cmd="$(rps_of "$TMP/command-c$c-$r.txt")"
      app="$(rps_of "$TMP/append-c$c-$r.txt")"
      echo "c$c round $r: command ${cmd}/s p50 $(p50_of "$TMP/command-c$c-$r.txt") $(grep -o 'errors=[0-9]* rejected=[0-9]*' "$TMP/command-c$c-$r.txt")," \
        "append ${app}/s p50 $(p50_of "$TMP/append-c$c-$r.txt") $(grep -o 'errors=[0-9]* conflicts=[0-9]*' "$TMP/append-c$c-$r.txt")," \
        "ratio $(awk -v a="$cmd" -v b="$app" 'BEGIN {printf "%.2f", a / b}')"
    done
  done
}

run 2>&1 | tee "$OUT"
echo "run_commands_bench: saved to $OUT"
