#!/usr/bin/env bash
# Reads below the event cache (`./dev bench evicted`): a node with a small
# cache (CACHE_BYTES, default 4 MiB) gets 34 events on one tag, then about
# 200,000 appends on fresh boundaries (APPEND_SECONDS of wrk), so the cache
# evicts the 34. Then, on the same node, GET /read of that tag (one
# statement on the HTTP threads, runtime/database_reads; with
# NODE_ARGS=--dcbd.http-read-connections=0 through a reader instead, the
# path before), GET /read of a tag nothing
# carries (ruled out by the cache's summary of what it evicted, answered from
# memory), each with 100 connections and with one, and pgbench running the
# very SELECT the node sends for the evicted tag (16 clients, prepared and
# simple protocol) as the baseline.
#
# Knobs: CACHE_BYTES, APPEND_SECONDS (15), SECONDS_PER_RUN (8), NODE_ARGS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN=build/release/runtime
NODE="${DCBD_NODE:-$BIN/dcbd}"
CACHE_BYTES="${CACHE_BYTES:-4194304}"
APPEND_SECONDS="${APPEND_SECONDS:-15}"
DURATION="${SECONDS_PER_RUN:-8}"
SCHEMA=bench_evicted
read -r -a EXTRA <<<"${NODE_ARGS:-}"

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_require evicted "$NODE"
command -v wrk >/dev/null || {
  echo "run_evicted_bench: wrk is not installed (Debian package wrk)" >&2
  exit 1
}

TMP="$(mktemp -d -t run_evicted_bench.XXXXXX)"
NODE_PID=""
cleanup() {
  if [[ -n "$NODE_PID" ]]; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

query_of() {
  python3 -c "import json, sys, urllib.parse; print(urllib.parse.quote(json.dumps({'items': [{'types': ['Read'], 'tags': [sys.argv[1]]}]})))" "$1"
}

run() {
  bench_header "reads below the event cache benchmark"
  echo "# node: $NODE --dcbd.cache-bytes=$CACHE_BYTES ${EXTRA[*]}; ${APPEND_SECONDS} s of appends, ${DURATION} s per read run"
  psql_dsn -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null
  bench_start_node "$TMP/node.log" "$NODE" "--dcbd.cache-bytes=$CACHE_BYTES" "${EXTRA[@]}"
  local url="http://127.0.0.1:$HTTP_PORT" events tag q c m
  events="$(python3 -c 'import json; print(json.dumps([{"type":"Read","tags":["read:34"],"data":"payload-%d" % i} for i in range(34)]))')"
  curl -sf -o /dev/null "$url/append" -H 'Content-Type: application/json' \
    -d "{\"events\":$events}"
  echo "## appends on fresh boundaries, 100 connections"
  wrk -t2 -c100 -d"${APPEND_SECONDS}s" -s bench/http_append.lua "$url" \
    | grep -E 'Requests/sec|errors'
  sleep 2
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^dcb_cache_(lo|hi) '
  for tag in read:34 read:none; do
    q="$(query_of "$tag")"
    echo "## GET /read of $tag: $(curl -s "$url/read?query=$q" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') events"
    for c in 100 1; do
      echo "# $c connections"
      wrk -t"$([[ $c == 1 ]] && echo 1 || echo 2)" -c"$c" -d"${DURATION}s" \
        --latency -s bench/http_read.lua "$url/read?query=$q" \
        | grep -E 'Requests/sec|50%|99%|errors'
    done
  done
  echo "## the node's cache"
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" \
    | grep -E '^dcb_(cache_(summary_answers_total|reads_total\{.*route="(read|stream)")|http_database_reads_total)' \
    || true
  cat >"$TMP/read.sql" <<SQL
SELECT h.position, e.position, e.type, e.tags, e.data, e.metadata, e.us FROM $SCHEMA.head h LEFT JOIN LATERAL (SELECT x.position, x.type, x.tags, x.data, x.metadata, (extract(epoch FROM x.recorded_at) * 1000000)::bigint AS us FROM $SCHEMA.events x WHERE x.position >= 1::bigint AND x.position <= 9223372036854775807::bigint AND ((x.type = ANY ('{Read}'::text[]) AND x.tags @> '{read:34}'::text[])) ORDER BY x.position LIMIT 1001::bigint) e ON true ORDER BY e.position;
SQL
  for m in prepared simple; do
    echo "## pgbench, the same SELECT on the evicted tag, 16 clients, -M $m"
    pgbench -n -M "$m" -c 16 -j 2 -T "$DURATION" -f "$TMP/read.sql" \
      "$DCBD_TEST_PG_DSN" 2>&1 | grep -E '^tps|latency average'
  done
  echo "## EXPLAIN ANALYZE of that SELECT"
  psql_dsn -c "EXPLAIN ANALYZE $(cat "$TMP/read.sql")" | grep -E 'Planning|Execution'
  kill -TERM "$NODE_PID"
  wait "$NODE_PID" || true
  NODE_PID=""
  psql_dsn -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null
}

run 2>&1 | tee "$OUT"
echo "run_evicted_bench: saved to $OUT"
