#!/usr/bin/env bash
# Before/after of two dcbd binaries on the cluster's append workloads,
# interleaved round by round (old, new, old, new, ...), so that the drift of
# a shared machine hits both alike. Each run starts fresh nodes on a fresh
# schema, drives them with three wrk processes of CONNECTIONS/3 connections
# (bench/http_append.lua: conditional single-event appends) for
# SECONDS_PER_RUN, and prints appends/s, each wrk's share and the CPU of
# each node and of all PostgreSQL processes (cores). Medians at the end.
#
# usage: ./dev bench cluster_ab OLD_DCBD NEW_DCBD [mode...]
#        (or bench/run_cluster_ab_bench.sh with DCBD_TEST_PG_DSN set)
#   modes: one      one node alone, the three wrk on it
#          three    three nodes, one wrk each, each group-committing
#          forward  three nodes, one wrk each, n2 and n3 forwarding to n1
#                   (--dcbd.cluster-writer=n1)
#          (default: forward one)
# env: DCBD_TEST_PG_DSN (set by ./dev), ROUNDS (3), SECONDS_PER_RUN (10),
#      CONNECTIONS (99), DCBD_NODE_ARGS (extra options for every node)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
OLD="$(realpath "${1:?usage: ./dev bench cluster_ab OLD_DCBD NEW_DCBD [mode...]}")"
NEW="$(realpath "${2:?usage: ./dev bench cluster_ab OLD_DCBD NEW_DCBD [mode...]}")"
shift 2
[[ -x $OLD && -x $NEW ]] || { echo "cluster_ab: $OLD or $NEW is not executable" >&2; exit 2; }
cd "$ROOT"
MODES=("$@")
((${#MODES[@]} > 0)) || MODES=(forward one)
ROUNDS="${ROUNDS:-3}"
DURATION="${SECONDS_PER_RUN:-10}"
CONNECTIONS="${CONNECTIONS:-99}"
DSN="${DCBD_TEST_PG_DSN:?set DCBD_TEST_PG_DSN (./dev sets it)}"
read -r -a NODE_ARGS <<<"${DCBD_NODE_ARGS:-}"
SCHEMA=bench_cluster_ab
command -v wrk >/dev/null || { echo "cluster_ab: wrk is missing" >&2; exit 1; }
for m in "${MODES[@]}"; do
  case "$m" in one | three | forward) ;; *)
    echo "cluster_ab: unknown mode $m" >&2
    exit 2
    ;;
  esac
done

WORK="$(mktemp -d /tmp/cluster_ab.XXXXXX)"
PIDS=()
stop_nodes() {
  if ((${#PIDS[@]} > 0)); then kill "${PIDS[@]}" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_nodes; rm -rf "$WORK"' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# CPU ticks (user + system) of a process; of all PostgreSQL processes.
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {
  local t=0 p
  for p in $(pgrep -x postgres || true); do t=$((t + $(ticks "$p"))); done
  echo "$t"
}
HZ="$(getconf CLK_TCK)"

# run BIN MODE: one result line into $WORK/line (not in a subshell, so
# that the EXIT trap knows the nodes)
run() {
  local bin=$1 mode=$2 n=3 i
  [[ $mode == one ]] && n=1
  psql "$DSN" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1
  local http=() cl=() seeds=""
  for ((i = 1; i <= 3; i++)); do
    http[i]=$(free_port)
    cl[i]=$(free_port)
    seeds+="${seeds:+,}127.0.0.1:${cl[i]}"
  done
  local extra=()
  [[ $mode == forward ]] && extra=(--dcbd.cluster-writer=n1)
  for ((i = 1; i <= n; i++)); do
    DCB_POSTGRES_DSN="$DSN" DCB_SCHEMA=$SCHEMA DCB_NODE_NAME=n$i \
      DCB_HTTP_ADDR=127.0.0.1:${http[i]} DCB_METRICS_ADDR=127.0.0.1:$(free_port) \
      DCB_CLUSTER_ADDR=127.0.0.1:${cl[i]} DCB_CLUSTER_SEEDS="$seeds" \
      "$bin" "${extra[@]}" "${NODE_ARGS[@]}" >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
    ((i == 1)) && sleep 2 # n1 installs the schema
  done
  for ((i = 1; i <= n; i++)); do
    local k
    for ((k = 0; k < 100; k++)); do
      curl -sf "http://127.0.0.1:${http[i]}/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  [[ $mode == forward ]] && for ((i = 2; i <= 3; i++)); do
    for ((k = 0; k < 100; k++)); do
      grep -q "forwarding appends to n1" "$WORK/n$i.log" && break
      sleep 0.1
    done
  done
  sleep 2
  local t0=() t1=() pg0 pg1
  for ((i = 1; i <= n; i++)); do t0[i]=$(ticks "${PIDS[i - 1]}"); done
  pg0=$(pg_ticks)
  local w target wrks=()
  for w in 1 2 3; do
    target=$w
    [[ $mode == one ]] && target=1
    wrk -t1 -c$((CONNECTIONS / 3)) -d"${DURATION}s" -s bench/http_append.lua \
      "http://127.0.0.1:${http[target]}" -- "ab$w-$RANDOM-" >"$WORK/wrk$w.txt" 2>&1 &
    wrks+=($!)
  done
  for w in "${wrks[@]}"; do wait "$w" || true; done
  for ((i = 1; i <= n; i++)); do t1[i]=$(ticks "${PIDS[i - 1]}"); done
  pg1=$(pg_ticks)
  stop_nodes
  local rps per cpu=""
  rps=$(awk '/^Requests\/sec:/ {s += $2} END {printf "%.0f", s}' "$WORK"/wrk[123].txt)
  per=$(awk '/^Requests\/sec:/ {printf "%s%.0f", (n++ ? "," : ""), $2}' "$WORK"/wrk[123].txt)
  for ((i = 1; i <= 3; i++)); do
    local c=0
    ((i <= n)) && c=$((t1[i] - t0[i]))
    cpu+=" cpu_n$i=$(awk -v t="$c" -v hz="$HZ" -v d="$DURATION" 'BEGIN {printf "%.2f", t / hz / d}')"
  done
  cpu+=" cpu_postgres=$(awk -v t="$((pg1 - pg0))" -v hz="$HZ" -v d="$DURATION" 'BEGIN {printf "%.2f", t / hz / d}')"
  echo "rps=$rps per_wrk=$per$cpu" >"$WORK/line"
}

echo "# cluster A/B $(date -Is): old $OLD, new $NEW; modes ${MODES[*]}; $ROUNDS round(s) of ${DURATION} s, $CONNECTIONS connections"
RESULTS="$WORK/results"
: >"$RESULTS"
for ((r = 1; r <= ROUNDS; r++)); do
  for mode in "${MODES[@]}"; do
    for which in old new; do
      bin=$OLD
      [[ $which == new ]] && bin=$NEW
      run "$bin" "$mode"
      line="round=$r bin=$which mode=$mode $(cat "$WORK/line")"
      echo "$line"
      echo "$line" >>"$RESULTS"
    done
  done
done
# Medians of appends/s per binary and mode, and the ratio of each mode to
# "one" of the same binary (median of the rounds' ratios) when it ran.
python3 - "$RESULTS" <<'EOF'
import re, statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
modes = list(dict.fromkeys(r["mode"] for r in rows))
for b in ("old", "new"):
    for m in modes:
        xs = [float(r["rps"]) for r in rows if r["bin"] == b and r["mode"] == m]
        line = f"summary bin={b} mode={m} rps={statistics.median(xs):.0f}"
        if m != "one" and "one" in modes:
            ratios = []
            for r in {r["round"] for r in rows}:
                a = [float(x["rps"]) for x in rows if x["bin"] == b and x["mode"] == m and x["round"] == r]
                o = [float(x["rps"]) for x in rows if x["bin"] == b and x["mode"] == "one" and x["round"] == r]
                if a and o and o[0] > 0:
                    ratios.append(a[0] / o[0])
            line += f" over_one={statistics.median(ratios):.3f}"
        print(line)
EOF
