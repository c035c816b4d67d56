#!/usr/bin/env bash
# Event bus benchmark suite (`./dev bench bus`): bench/bus_bench.cpp's
# workloads, then the targets of the bus issue checked against the figures
# of the same run. Saved to .bench/bus-<timestamp>.txt and printed.
#
# usage: bench/run_bus_bench.sh [workload...]   (fanout slow latency sse ws
#          catchup; default: all)
# env:   DCBD_TEST_PG_DSN (set by ./dev), FANOUT_SECONDS (5), SLOW_ACK_MS (20),
#        LATENCY_SECONDS (5), SSE_SECONDS (5), SSE_CONNECTIONS (500),
#        CATCHUP_EVENTS (1000000), DCBD_BUS_BENCH (the binary; default:
#        this build's)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN="${DCBD_BUS_BENCH:-build/release/bench/dcbd_bus_bench}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_require bus "$BIN"
TMP="$(mktemp -d -t run_bus_bench.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

# value NAME KEY, target LABEL VALUE OP LIMIT: see bench/lib.sh
value() { bench_value "$TMP/bus.txt" "$1" "$2"; }
target() { bench_target "$@"; }

{
  bench_header "bus benchmarks"
  echo
  "$BIN" "$@" | tee "$TMP/bus.txt"
  echo
  echo "# targets (same run)"
  a0="$(value fanout_0 append_events_per_s)"
  a100="$(value fanout_100 append_events_per_s)"
  if [[ -n "$a0" && -n "$a100" ]]; then
    ratio="$(awk -v a="$a100" -v b="$a0" 'BEGIN { printf "%.3f", a / b }')"
  else
    ratio=""
  fi
  target "deliveries/s with 100 subscribers" "$(value fanout_100 deliveries_per_s)" ">=" 2000000
  target "append rate with 100 subscribers / with none" "$ratio" ">=" 0.9
  target "every subscriber complete and in order (100 subscribers)" \
    "$(value fanout_100 complete)" ">=" 1
  target "append rate with one slow subscriber / with none" \
    "$(value fanout_slow ratio)" ">=" 0.9
  if [[ -n "$(value fanout_slow_1 complete)" ]]; then
    target "the slow subscriber ends complete and in order" \
      "$(($(value fanout_slow_1 complete) * $(value fanout_slow_1 ordered)))" ">=" 1
  fi
  target "commit -> delivery p99 in process (ms)" "$(value latency_in_process p99_ms)" "<=" 2
  target "commit -> written to the SSE socket p99 (ms)" \
    "$(value latency_sse_commit_to_socket p99_ms)" "<=" 10
  target "append call -> SSE client p99 (ms, includes the commit)" \
    "$(value latency_sse_append_call_to_client p99_ms)" "<=" 10
  target "other process, NOTIFY never heard, p99 (ms)" \
    "$(value latency_other_process_no_notify p99_ms)" "<=" 1100
  echo "  SSE fan-out: $(value sse_fanout open) connections, $(value sse_fanout frames_per_s) frames/s (arrwDB: ~40,000 msg/s at 500)"
  echo "  WebSocket fan-out: $(value ws_fanout open) connections, $(value ws_fanout frames_per_s) frames/s"
  for r in 0 1; do
    rd="$(value catchup_$r read_events_per_s)"
    hr="$(value catchup_$r http_v1_read_events_per_s)"
    sb="$(value catchup_$r subscription_events_per_s)"
    [[ -n "$rd" ]] && echo "  catch-up round $r: subscription $sb events/s vs GET /v1/read $hr events/s ($(awk -v a="$sb" -v b="$hr" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')x), in-process streaming read $rd events/s"
  done
} | tee "$OUT"
echo "saved to $OUT"
