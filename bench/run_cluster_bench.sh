#!/usr/bin/env bash
# Cluster benchmark (`./dev bench cluster`, issue 14): three node processes
# on 127.0.0.1, one schema, the local PostgreSQL. Each node has its own HTTP
# and metrics ports, DCB_NODE_NAME=n1..n3, DCB_CLUSTER_ADDR=127.0.0.1:<port>
# and DCB_CLUSTER_SEEDS=<the three cluster addresses> (a node without the
# membership ignores the last two and still shares the database safely).
# Saved to .bench/cluster-<timestamp>.txt and printed.
#
# usage: bench/run_cluster_bench.sh [workload...]
#          (throughput latency takeover; default: all)
#
#   throughput  conditional single-event appends through POST /append
#               (wrk, bench/http_append.lua, a boundary per request):
#               CONNECTIONS in all, from three wrk processes of
#               CONNECTIONS/3 each run at the same time, aimed at
#               - "one": a lone node (the other two stopped),
#               - "one_of_three": node 1 while nodes 2 and 3 run idle
#                 (they follow the log: what a node costs the others),
#               - "three": one wrk per node, each node group-committing
#                 against the head lock;
#               - "forward": one wrk per node, nodes 2 and 3 forwarding
#                 their appends to node 1's store actor over the middleman
#                 (--dcbd.cluster-writer=n1: larger groups, one writer);
#               THROUGHPUT_ROUNDS rounds, the order of the modes
#               alternating, medians. Target: three or forward >= one.
#               Each round also gives the CPU of each node and of all
#               PostgreSQL processes meanwhile, in cores (cpu_n1..cpu_n3,
#               cpu_postgres). Rounds start once the nodes announce their
#               commits to each other (a build with shared commits).
#   latency     one subscriber (GET /v1/subscribe, NDJSON) on each node,
#               appends of one event through POST /v1/append on node 1 at
#               LAT_RATE/s for LAT_SECONDS (bench/cluster_bench.py latency):
#               delivery on node 1 (same node) and on nodes 2 and 3 (cross
#               node), measured from the append's acknowledgement and from
#               its send.
#   takeover    nodes run dcbd-courses (projector course_seats, exactly_once,
#               and job workers) while a writer appends StudentSubscribed
#               events at WRITER_RATE/s across the nodes. TAKEOVER_RUNS
#               times per signal: find the owner, send SIGKILL (then, in a
#               second series, SIGSTOP) and time until another node reports
#               state running with a higher epoch (polled every 10 ms).
#               After SIGKILL the node is restarted on the same ports; after
#               SIGSTOP it gets SIGCONT once the takeover was seen, and the
#               run checks that it did not write with its old epoch: it
#               logged that it stopped its projectors (fenced), it reports
#               standby, the projectors row still names the new owner and
#               epoch, and the read model equals a recount of the events up
#               to its checkpoint. Targets: p50 <= 1.5 s (SIGKILL),
#               <= 4.5 s (SIGSTOP).
#   The pgbench baseline (bench/pgbench_baseline.sh: single-row insert
#   transactions) runs before and after the workloads.
#
# env: DCBD_TEST_PG_DSN (set by ./dev), DCBD_NODE (the dcbd binary for
#      throughput and latency; default this build's), DCBD_COURSES
#      (dcbd-courses for takeover; default this build's), DCBD_NODE_ARGS
#      (extra options for every node), SECONDS_PER_RUN (10),
#      CONNECTIONS (99), WRK_THREADS (1 per wrk), THROUGHPUT_ROUNDS (3),
#      BASELINE_SECONDS (10), LAT_RATE (500), LAT_SECONDS (10),
#      LAT_APPENDERS (16), TAKEOVER_RUNS (10), WRITER_RATE (50),
#      RUNS (alias of TAKEOVER_RUNS)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

BIN=build/release/runtime
NODE="${DCBD_NODE:-$BIN/dcbd}"
COURSES="${DCBD_COURSES:-$BIN/dcbd-courses}"
read -r -a NODE_ARGS <<<"${DCBD_NODE_ARGS:-}"
DURATION="${SECONDS_PER_RUN:-10}"
CONNECTIONS="${CONNECTIONS:-99}"
WRK_THREADS="${WRK_THREADS:-1}"
ROUNDS="${THROUGHPUT_ROUNDS:-3}"
BASELINE_SECONDS="${BASELINE_SECONDS:-10}"
LAT_RATE="${LAT_RATE:-500}"
LAT_SECONDS="${LAT_SECONDS:-10}"
LAT_APPENDERS="${LAT_APPENDERS:-16}"
TAKEOVER_RUNS="${TAKEOVER_RUNS:-${RUNS:-10}}"
WRITER_RATE="${WRITER_RATE:-50}"
PROJECTOR=course_seats
SCHEMA=bench_cluster
PROBE=(python3 bench/cluster_bench.py)

WORKLOADS=("$@")
((${#WORKLOADS[@]} > 0)) || WORKLOADS=(throughput latency takeover)
for w in "${WORKLOADS[@]}"; do
  case "$w" in
    throughput | latency | takeover) ;;
    *)
      echo "run_cluster_bench: unknown workload $w (throughput latency takeover)" >&2
      exit 2
      ;;
  esac
done
((CONNECTIONS % 3 == 0)) || {
  echo "run_cluster_bench: CONNECTIONS must be a multiple of 3 (one wrk per node)" >&2
  exit 2
}

# shellcheck source=bench/lib.sh
source bench/lib.sh
for w in "${WORKLOADS[@]}"; do
  bin="$NODE"
  [[ "$w" == takeover ]] && bin="$COURSES"
  bench_require cluster "$bin" # also sets OUT
done
command -v wrk >/dev/null || {
  echo "run_cluster_bench: wrk is not installed (Debian package wrk)" >&2
  exit 1
}

TMP="$(mktemp -d -t run_cluster_bench.XXXXXX)"
# The binaries under test are copied first: a build that relinks them
# during the run (./dev build in the same tree) must not change what the
# later rounds or a restarted node run, nor fail a restart half-way.
snapshot_binary() {
  local src="$1" dst
  dst="$TMP/bin/$(basename "$src")"
  if [[ ! -e "$dst" ]]; then
    mkdir -p "$TMP/bin"
    cp "$src" "$dst"
  fi
  echo "$dst"
}
declare -a PID=("" "" "" "") # node i's process, "" when it is not running
WRITER_PID=""
WATCHDOG_PID=""
declare -a WRK_PIDS=()

sql() { psql "$DCBD_TEST_PG_DSN" -X -q -v ON_ERROR_STOP=1 -tA "$@"; }

# The node processes that may be running, for the watchdog.
save_pids() {
  printf '%s\n' "${PID[@]}" "$WRITER_PID" | grep -E '^[0-9]+$' >"$TMP/pids.new" || true
  mv "$TMP/pids.new" "$TMP/pids"
}

# stop_pid PID: SIGCONT (it may be frozen), SIGTERM, up to 20 s for a
# graceful stop, then SIGKILL; reaps it.
stop_pid() {
  local p="$1" i
  [[ -n "$p" ]] || return 0
  kill -CONT "$p" 2>/dev/null || true
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

cleanup() {
  local rc=$? i p
  trap '' INT TERM HUP # a second Ctrl-C must not cut the clean-up short
  trap - EXIT
  # Nothing stays frozen: wake every node first, then stop them all.
  for i in 1 2 3; do
    [[ -z "${PID[i]}" ]] || kill -CONT "${PID[i]}" 2>/dev/null || true
  done
  for p in "${WRK_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  stop_pid "$WRITER_PID"
  for i in 1 2 3; do
    stop_pid "${PID[i]}"
    PID[i]=""
  done
  for p in "${WRK_PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  : >"$TMP/pids"
  if [[ -n "$WATCHDOG_PID" ]]; then
    kill "$WATCHDOG_PID" 2>/dev/null || true
    wait "$WATCHDOG_PID" 2>/dev/null || true
  fi
  drop_schema 2>/dev/null || true
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Should this script die without its traps (SIGKILL), a watchdog outside
# it wakes and stops the nodes it left behind: no frozen node outlives the
# run. It exits by itself once the script is gone and the list is empty.
: >"$TMP/pids"
(
  trap '' INT HUP
  while kill -0 $$ 2>/dev/null; do sleep 1; done
  if [[ -s "$TMP/pids" ]]; then
    while read -r p; do
      kill -CONT "$p" 2>/dev/null
      kill -TERM "$p" 2>/dev/null
    done <"$TMP/pids"
    rm -rf "$TMP"
  fi
) </dev/null >/dev/null 2>&1 &
WATCHDOG_PID=$!

NODE_SRC="$NODE" COURSES_SRC="$COURSES"
for w in "${WORKLOADS[@]}"; do
  case "$w" in
    takeover) COURSES="$(snapshot_binary "$COURSES_SRC")" ;;
    *) NODE="$(snapshot_binary "$NODE_SRC")" ;;
  esac
done
# describe SRC COPY: what was benchmarked.
describe() {
  echo "$1 ($(stat -c '%s bytes, modified %y' "$1" | cut -d. -f1), sha256 of the copy" \
    "$(sha256sum "$2" | cut -c1-12))"
}

# Nine free ports: HTTP, metrics and cluster for each node, taken at start
# and kept for restarts.
read -r -a PORTS <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
for s in ss: s.close()')"
http_port() { echo "${PORTS[$((($1 - 1) * 3))]}"; }
metrics_port() { echo "${PORTS[$((($1 - 1) * 3 + 1))]}"; }
cluster_port() { echo "${PORTS[$((($1 - 1) * 3 + 2))]}"; }
url() { echo "http://127.0.0.1:$(http_port "$1")"; }
SEEDS="127.0.0.1:$(cluster_port 1),127.0.0.1:$(cluster_port 2),127.0.0.1:$(cluster_port 3)"

# start_node I BINARY: node nI in the background, its output appended to
# $TMP/nI.log, with NODE_ARGS and EXTRA_ARGS (set per phase).
EXTRA_ARGS=()
start_node() {
  local i="$1" bin="$2"
  echo "=== bench: start $(date +%T.%N)" >>"$TMP/n$i.log"
  DCB_POSTGRES_DSN="$DCBD_TEST_PG_DSN" DCB_SCHEMA="$SCHEMA" DCB_NODE_NAME="n$i" \
    DCB_HTTP_ADDR="127.0.0.1:$(http_port "$i")" \
    DCB_METRICS_ADDR="127.0.0.1:$(metrics_port "$i")" \
    DCB_CLUSTER_ADDR="127.0.0.1:$(cluster_port "$i")" DCB_CLUSTER_SEEDS="$SEEDS" \
    "$bin" "${NODE_ARGS[@]}" "${EXTRA_ARGS[@]}" >>"$TMP/n$i.log" 2>&1 &
  PID[i]=$!
  save_pids
}

stop_node() {
  local i="$1"
  stop_pid "${PID[i]}"
  PID[i]=""
  save_pids
}

# wait_node I [ARGS]: ready, with the projector's status when named, and in
# a full mesh once GET /v1/cluster exists. Prints the log on failure.
wait_node() {
  local i="$1"
  shift
  if ! "${PROBE[@]}" wait-node "$(url "$i")" --pid "${PID[i]}" "$@"; then
    echo "run_cluster_bench: node n$i is not ready; its log:" >&2
    tail -n 30 "$TMP/n$i.log" >&2
    return 1
  fi
}

running_nodes() {
  local i n=0
  for i in 1 2 3; do [[ -n "${PID[i]}" ]] && n=$((n + 1)); done
  echo "$n"
}

# start_cluster BINARY I...: starts those nodes, waits for all of them. The
# first one starts alone when no node runs: dcbd-courses creates its tables
# with CREATE TABLE IF NOT EXISTS in its setup, which is not safe against
# itself on a fresh schema (two nodes starting at once: one fails with a
# duplicate key in pg_type and exits 2).
start_cluster() {
  local bin="$1" i
  shift
  if [[ "$(running_nodes)" == 0 ]]; then
    start_node "$1" "$bin"
    wait_node "$1"
  fi
  for i in "$@"; do [[ -n "${PID[i]}" ]] || start_node "$i" "$bin"; done
  local members
  members="$(running_nodes)"
  for i in "$@"; do wait_node "$i" --members "$members"; done
  wait_shared_commits
}

# wait_shared_commits: with a build that shares commits (it exports
# dcb_bus_events_fed_total), until every running node announces its commits
# to every other one (a few seconds after the mesh: a node hands out its bus
# once it has read the peer's membership row), so that no round starts with
# nodes still reading each other's groups back. At most 15 s.
wait_shared_commits() {
  local i j t ok first=""
  for i in 1 2 3; do [[ -n "${PID[i]}" ]] && first="${first:-$i}"; done
  [[ -n "$first" ]] || return 0
  curl -s --max-time 5 "http://127.0.0.1:$(metrics_port "$first")/metrics" |
    grep -q '^dcb_bus_events_fed_total' || return 0
  for ((t = 0; t < 150; t++)); do
    ok=1
    for i in 1 2 3; do
      [[ -n "${PID[i]}" ]] || continue
      for j in 1 2 3; do
        [[ -n "${PID[j]}" && "$j" != "$i" ]] || continue
        # in the log since this node's last start
        awk '/^=== bench: start/ { text = "" } { text = text $0 "\n" }
             END { printf "%s", text }' "$TMP/n$i.log" |
          grep -q "announcing commits to n$j's bus" || ok=0
      done
    done
    ((ok)) && return 0
    sleep 0.1
  done
  echo "run_cluster_bench: the nodes do not all announce their commits to each other" >&2
}

# value FILE NAME KEY: see bench/lib.sh
value() { bench_value "$TMP/$1" "$2" "$3"; }

# median [FORMAT]: of the numbers on stdin (empty when none); an even count
# gives the mean of the middle two.
median() {
  sort -g | awk -v f="${1:-%.1f}" '{ v[NR] = $1 } END {
    if (NR == 0) exit
    if (NR % 2) printf f "\n", v[(NR + 1) / 2]
    else printf f "\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() {
  [[ -n "$1" && -n "$2" ]] || return 0
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b }'
}

# connections: client connections to the database but this one (only the
# nodes run besides it during a phase; a probe's request may add one).
connections() {
  sql -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
    AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
}

drop_schema() { sql -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null; }

head_of() { sql -c "SELECT position FROM $SCHEMA.head" 2>/dev/null || echo "?"; }

# ------------------------------------------------------------- throughput --

# group_totals: "<sum> <count>" of dcb_group_size_requests over the running
# nodes (requests committed, group commits).
group_totals() {
  local i
  for i in 1 2 3; do
    [[ -n "${PID[i]}" ]] || continue
    curl -s --max-time 5 "http://127.0.0.1:$(metrics_port "$i")/metrics" || true
  done | awk '$1 == "dcb_group_size_requests_sum" { s += $2 }
              $1 == "dcb_group_size_requests_count" { c += $2 }
              END { printf "%.0f %.0f\n", s, c }'
}

# cpu_ticks: CPU time (user + system, in clock ticks) of nodes 1, 2 and 3
# (0 when not running) and of all PostgreSQL server processes, one line.
cpu_ticks() {
  local i t out="" pg=0
  for i in 1 2 3; do
    t=0
    [[ -n "${PID[i]}" ]] && t="$(awk '{ print $14 + $15 }' "/proc/${PID[i]}/stat" 2>/dev/null || echo 0)"
    out+="$t "
  done
  for t in $(pgrep -x postgres || true); do
    pg=$((pg + $(awk '{ print $14 + $15 }' "/proc/$t/stat" 2>/dev/null || echo 0)))
  done
  echo "$out$pg"
}

# wrk_at NAME I I I: one wrk per listed node (CONNECTIONS/3 connections
# each), all at once; sums their rates into a `round` line, with the group
# commits of all running nodes meanwhile (mean requests per group, groups/s).
wrk_at() {
  local name="$1" k=0 i rps=0 errs=0 confl=0 per="" g0 c0 g1 c1 lsn0 h0 wal h1
  shift
  read -r g0 c0 <<<"$(group_totals)"
  local cpu0 cpu1
  read -r -a cpu0 <<<"$(cpu_ticks)"
  lsn0="$(sql -c "SELECT pg_current_wal_lsn()")"
  h0="$(head_of)"
  WRK_PIDS=()
  for i in "$@"; do
    k=$((k + 1))
    wrk -t"$WRK_THREADS" -c"$((CONNECTIONS / 3))" -d"${DURATION}s" --latency \
      -s bench/http_append.lua "$(url "$i")" -- "w$k-" >"$TMP/wrk-$name-$k.txt" 2>&1 &
    WRK_PIDS+=($!)
  done
  local p failed=0
  for p in "${WRK_PIDS[@]}"; do wait "$p" || failed=1; done
  WRK_PIDS=()
  for ((i = 1; i <= k; i++)); do
    local f="$TMP/wrk-$name-$i.txt" r e c
    r="$(awk '/^Requests\/sec:/ {print $2}' "$f")"
    [[ -n "$r" ]] || {
      cat "$f" >&2
      failed=1
      continue
    }
    rps="$(awk -v a="$rps" -v b="$r" 'BEGIN { printf "%.1f", a + b }')"
    per+="${per:+,}$(printf '%.0f' "$r")"
    e="$(sed -nE 's/.*wrk_append errors=([0-9]+).*/\1/p' "$f")"
    c="$(sed -nE 's/.*wrk_append .*conflicts=([0-9]+).*/\1/p' "$f")"
    errs=$((errs + ${e:-0}))
    confl=$((confl + ${c:-0}))
  done
  read -r g1 c1 <<<"$(group_totals)"
  read -r -a cpu1 <<<"$(cpu_ticks)"
  # WAL written meanwhile (the whole server's: nothing else runs on it
  # during a round) per event appended: what a standby has to receive.
  wal="$(sql -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")"
  h1="$(head_of)"
  ((failed == 0)) || echo "run_cluster_bench: a wrk of $name failed" >&2
  echo "round append_$name rps=$rps per_wrk=$per errors=$errs conflicts=$confl" \
    "connections=$CONNECTIONS nodes_running=$(running_nodes)" \
    "$(awk -v g="$((g1 - g0))" -v c="$((c1 - c0))" -v d="$DURATION" 'BEGIN {
      printf "requests_per_group=%.1f groups_per_s=%.0f", (c > 0) ? g / c : 0, c / d }')" \
    "$(awk -v w="$wal" -v e="$((h1 - h0))" -v d="$DURATION" 'BEGIN {
      printf "wal_bytes_per_event=%.0f wal_mb_per_s=%.1f", (e > 0) ? w / e : 0, w / d / 1048576 }')" \
    "head_after=$h1" \
    "$(awk -v hz="$(getconf CLK_TCK)" -v d="$DURATION" \
      -v a="${cpu0[*]}" -v b="${cpu1[*]}" 'BEGIN {
      split(a, x, " "); split(b, y, " ")
      # CPU seconds per second of the round: 1.0 is one core
      printf "cpu_n1=%.2f cpu_n2=%.2f cpu_n3=%.2f cpu_postgres=%.2f",
        (y[1] - x[1]) / hz / d, (y[2] - x[2]) / hz / d,
        (y[3] - x[3]) / hz / d, (y[4] - x[4]) / hz / d }')"
}

# out FILE: the last line of FILE, printed (after a function that changes
# the bench's state ran in this shell with its output appended to FILE: a
# pipeline would run it in a subshell, whose processes this shell could not
# stop or reap).
out() { tail -n 1 "$1"; }

# start_forwarding: the three nodes with n1 as the cluster's writer (n2 and
# n3 forward their appends to n1's store actor), once both forward.
start_forwarding() {
  EXTRA_ARGS=(--dcbd.cluster-writer=n1)
  start_cluster "$NODE" 1 2 3
  EXTRA_ARGS=()
  local i t
  for i in 2 3; do
    for ((t = 0; t < 100; t++)); do
      grep -q "forwarding appends to n1" "$TMP/n$i.log" && break
      sleep 0.1
    done
    grep -q "forwarding appends to n1" "$TMP/n$i.log" || {
      echo "run_cluster_bench: n$i does not forward to n1" >&2
      return 1
    }
  done
}

# forwarded_totals: dcb_appends_forwarded_total by result over n2 and n3.
forwarded_totals() {
  local i
  for i in 2 3; do
    curl -s --max-time 5 "http://127.0.0.1:$(metrics_port "$i")/metrics" || true
  done | awk -F'[{}" ]+' '$1 == "dcb_appends_forwarded_total" { v[$3] += $NF }
    END { printf "acked=%.0f rejected=%.0f unavailable=%.0f local=%.0f\n",
          v["acked"], v["rejected"], v["unavailable"], v["local"] }'
}

run_throughput() {
  echo "## throughput: conditional 1-event appends, $CONNECTIONS connections" \
    "(3 wrk x $((CONNECTIONS / 3)), $WRK_THREADS thread(s) each), ${DURATION} s per run," \
    "$ROUNDS round(s); node binary $NODE"
  drop_schema
  local r i f="$TMP/throughput.txt"
  : >"$f"
  # Odd rounds go forward -> three -> one_of_three -> one, even rounds the
  # other way, so that a drift of the machine or a growing log favours
  # none. "forward": three nodes, n2 and n3 forwarding their appends to
  # n1's store actor over the middleman (--dcbd.cluster-writer=n1).
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then
      start_forwarding
      wrk_at forward 1 2 3 >>"$f" && out "$f"
      echo "# forwarded by n2 and n3 so far: $(forwarded_totals)"
      for i in 3 2 1; do stop_node "$i"; done
      start_cluster "$NODE" 1 2 3
      wrk_at three 1 2 3 >>"$f" && out "$f"
      wrk_at one_of_three 1 1 1 >>"$f" && out "$f"
      stop_node 2
      stop_node 3
      wrk_at one 1 1 1 >>"$f" && out "$f"
      stop_node 1
    else
      start_cluster "$NODE" 1
      wrk_at one 1 1 1 >>"$f" && out "$f"
      start_cluster "$NODE" 2 3
      wrk_at one_of_three 1 1 1 >>"$f" && out "$f"
      wrk_at three 1 2 3 >>"$f" && out "$f"
      for i in 3 2 1; do stop_node "$i"; done
      start_forwarding
      wrk_at forward 1 2 3 >>"$f" && out "$f"
      echo "# forwarded by n2 and n3 so far: $(forwarded_totals)"
      for i in 3 2 1; do stop_node "$i"; done
    fi
  done
  # field NAME KEY: KEY of every `round` line NAME, one a line
  field() { awk -v n="$1" -v k="$2" '$1 == "round" && $2 == n {
    for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$f"; }
  local name
  for name in one one_of_three three forward; do
    echo "summary append_$name rps=$(field "append_$name" rps | median)" \
      "requests_per_group=$(field "append_$name" requests_per_group | median)" \
      "groups_per_s=$(field "append_$name" groups_per_s | median %.0f)" \
      "wal_bytes_per_event=$(field "append_$name" wal_bytes_per_event | median %.0f)" \
      "cpu_n1=$(field "append_$name" cpu_n1 | median %.2f)" \
      "cpu_n2=$(field "append_$name" cpu_n2 | median %.2f)" \
      "cpu_postgres=$(field "append_$name" cpu_postgres | median %.2f)" \
      "rounds=$ROUNDS connections=$CONNECTIONS"
  done | tee -a "$TMP/summary.txt"
  # the ratio of each round, three / one (same round), and their median
  paste <(field append_three rps) <(field append_one rps) |
    awk '$2 > 0 { print $1 / $2 }' | median %.3f |
    sed 's/^/summary append_three_over_one ratio=/' | tee -a "$TMP/summary.txt"
  paste <(field append_forward rps) <(field append_one rps) |
    awk '$2 > 0 { print $1 / $2 }' | median %.3f |
    sed 's/^/summary append_forward_over_one ratio=/' | tee -a "$TMP/summary.txt"
  paste <(field append_forward rps) <(field append_three rps) |
    awk '$2 > 0 { print $1 / $2 }' | median %.3f |
    sed 's/^/summary append_forward_over_three ratio=/' | tee -a "$TMP/summary.txt"
  echo "# log after the throughput runs: $(head_of) events"
}

# ---------------------------------------------------------------- latency --

run_latency() {
  echo "## delivery latency: appends on n1 at $LAT_RATE/s for $LAT_SECONDS s" \
    "($LAT_APPENDERS appending threads), a subscriber on each node; node binary $NODE"
  start_cluster "$NODE" 1 2 3
  echo "# log before: $(head_of) events"
  "${PROBE[@]}" latency --append "$(url 1)" --same "$(url 1)" \
    --cross "$(url 2)" "$(url 3)" --rate "$LAT_RATE" --seconds "$LAT_SECONDS" \
    --appenders "$LAT_APPENDERS" | tee -a "$TMP/summary.txt"
  local i
  for i in 1 2 3; do
    echo "# n$i: $(curl -s "http://127.0.0.1:$(metrics_port "$i")/metrics" |
      grep -E '^dcb_(commit_to_delivery_seconds_(sum|count)|cache_bytes|cache_events) ' | tr '\n' ' ')"
  done
  # What three nodes hold open on the server (the bench's own psql aside).
  echo "# PostgreSQL connections of the three nodes: $(connections)"
  # Cache footprint per event, from the node that appended (its cache holds
  # the whole log of this run if it fits).
  curl -s "http://127.0.0.1:$(metrics_port 1)/metrics" | awk '
    $1 == "dcb_cache_bytes" { b = $2 } $1 == "dcb_cache_events" { e = $2 }
    END { if (e > 0) printf "summary cache_footprint bytes=%.0f events=%.0f bytes_per_event=%.0f\n", b, e, b / e }' |
    tee -a "$TMP/summary.txt"
  for i in 1 2 3; do stop_node "$i"; done
}

# --------------------------------------------------------------- takeover --

owner_of() { "${PROBE[@]}" owner "$(url 1)" "$(url 2)" "$(url 3)" --projector "$PROJECTOR"; }

# A single-snapshot recount: the read model against the events up to the
# projector's checkpoint (minus parked ones). Prints "model recount position".
recount() {
  sql -F ' ' -c "SELECT (SELECT coalesce(sum(subscribed), 0) FROM $SCHEMA.course_seats),
      (SELECT count(*) FROM $SCHEMA.events e WHERE e.type = 'StudentSubscribed'
         AND e.position <= p.position)
      - (SELECT count(*) FROM $SCHEMA.projector_dead_letters d
         WHERE d.projector = p.name AND d.position <= p.position),
      p.position
    FROM $SCHEMA.projectors p WHERE p.name = '$PROJECTOR'"
}

# takeover_run SIGNAL RUN: one measurement; appends a `run` line.
takeover_run() {
  local sig="$1" run="$2" owner epoch o i survivors=() line
  read -r owner epoch <<<"$(owner_of)"
  o="${owner#n}"
  [[ "$o" =~ ^[123]$ && -n "${PID[o]}" ]] || {
    echo "run_cluster_bench: owner '$owner' is not one of the bench's nodes" >&2
    return 1
  }
  for i in 1 2 3; do [[ "$i" != "$o" ]] && survivors+=("$(url "$i")"); done
  local log_at
  log_at="$(stat -c %s "$TMP/n$o.log")"
  line="$("${PROBE[@]}" takeover "${survivors[@]}" --pid "${PID[o]}" --signal "$sig" \
    --projector "$PROJECTOR" --old-epoch "$epoch" || true)"
  if [[ "$sig" == KILL ]]; then
    wait "${PID[o]}" 2>/dev/null || true
    PID[o]=""
    save_pids
    echo "$line run=$run old_owner=$owner old_epoch=$epoch"
    start_node "$o" "$COURSES"
    wait_node "$o" --projector "$PROJECTOR" --members 3
    return 0
  fi
  # SIGSTOP: wake it once the takeover was seen (or timed out), then check
  # that it wrote nothing with its old epoch.
  kill -CONT "${PID[o]}"
  local new_owner new_epoch state_ok=0 fenced row_owner row_epoch row_ok=0 rc
  new_owner="$(sed -nE 's/.*new_owner=([^ ]+).*/\1/p' <<<"$line")"
  new_epoch="$(sed -nE 's/.*new_epoch=([0-9]+).*/\1/p' <<<"$line")"
  "${PROBE[@]}" wait-state "$(url "$o")" --projector "$PROJECTOR" --state standby \
    >/dev/null && state_ok=1
  sleep 1 # room for a stale write, should the node attempt one
  fenced="$(tail -c +"$((log_at + 1))" "$TMP/n$o.log" |
    grep -cE "fenced|projectors on node n$o stop" || true)"
  read -r row_owner row_epoch <<<"$(sql -F ' ' -c "SELECT owner, epoch FROM $SCHEMA.projectors WHERE name = '$PROJECTOR'")"
  [[ -n "$new_epoch" && "$row_owner" == "$new_owner" && "$row_epoch" == "$new_epoch" ]] && row_ok=1
  read -r model count pos <<<"$(recount)"
  rc=0
  [[ "$model" == "$count" ]] && rc=1
  echo "$line run=$run old_owner=$owner old_epoch=$epoch woken_standby=$state_ok" \
    "fenced_log_lines=$fenced row_owner=$row_owner row_epoch=$row_epoch row_kept=$row_ok" \
    "model=$model recount=$count checkpoint=$pos recount_ok=$rc"
  tail -c +"$((log_at + 1))" "$TMP/n$o.log" | grep -E "fenced|stop|lock session" |
    sed "s/^/#   n$o after SIGCONT: /" | head -n 5
}

# takeover_summary SIGNAL NAME
takeover_summary() {
  local sig="$1" name="$2" ms n ok
  ms="$(awk -v s="signal=$sig" '$1 == "run" && $2 == "takeover" && $3 == s' "$TMP/takeover.txt" |
    sed -nE 's/.* ms=([0-9.]+) .*/\1/p')"
  n="$(grep -c "signal=$sig" "$TMP/takeover.txt" || true)"
  ok="$(grep -c . <<<"$ms" || true)"
  [[ -n "$ms" ]] || ok=0
  echo "summary $name runs=$n taken_over=$ok p50_ms=$(median <<<"$ms")" \
    "max_ms=$(sort -g <<<"$ms" | tail -n1) min_ms=$(sort -g <<<"$ms" | head -n1)"
}

run_takeover() {
  echo "## takeover: $TAKEOVER_RUNS runs per signal, dcbd-courses ($COURSES)," \
    "writer at $WRITER_RATE StudentSubscribed/s across the nodes"
  drop_schema
  # Cold start: n1 alone first (it creates the schema), then n2 and n3 at
  # once; the time until every node lists all three as up.
  local i t0 mesh_ms
  start_node 1 "$COURSES"
  wait_node 1
  t0="$(date +%s%N)"
  start_node 2 "$COURSES"
  start_node 3 "$COURSES"
  "${PROBE[@]}" wait-mesh "$(url 1)" "$(url 2)" "$(url 3)" --members 3 || {
    tail -n 30 "$TMP"/n*.log >&2
    return 1
  }
  mesh_ms=$((($(date +%s%N) - t0) / 1000000))
  echo "summary cold_start_mesh ms=$mesh_ms target_ms=2000 met=$((mesh_ms <= 2000))" |
    tee -a "$TMP/summary.txt"
  start_cluster "$COURSES" 1 2 3
  for i in 1 2 3; do wait_node "$i" --projector "$PROJECTOR" --members 3; done
  echo "# PostgreSQL connections of the three nodes: $(connections)"
  "${PROBE[@]}" writer "$(url 1)" "$(url 2)" "$(url 3)" --rate "$WRITER_RATE" \
    >"$TMP/writer.txt" 2>&1 &
  WRITER_PID=$!
  save_pids
  sleep 1
  local sig r
  : >"$TMP/takeover.txt"
  for sig in KILL STOP; do
    for ((r = 1; r <= TAKEOVER_RUNS; r++)); do
      takeover_run "$sig" "$r" >"$TMP/run.txt"
      cat "$TMP/run.txt"
      cat "$TMP/run.txt" >>"$TMP/takeover.txt"
      sleep 0.5 # the new owner settles before the next run
    done
  done
  stop_pid "$WRITER_PID"
  WRITER_PID=""
  save_pids
  cat "$TMP/writer.txt"
  # The final read model, once the owner has caught up with the head.
  local owner epoch o model count pos
  read -r owner epoch <<<"$(owner_of)"
  o="${owner#n}"
  for i in $(seq 100); do
    read -r model count pos <<<"$(recount)"
    [[ "$pos" == "$(head_of)" ]] && break
    sleep 0.1
  done
  echo "# final: owner $owner epoch $epoch, checkpoint $pos of head $(head_of), read model $model, recount $count"
  {
    takeover_summary KILL takeover_kill
    takeover_summary STOP takeover_stop
    awk '$1 == "run" && /signal=STOP/ {
      n++
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      fenced += (f["fenced_log_lines"] > 0); kept += f["row_kept"]
      standby += f["woken_standby"]; rc += f["recount_ok"]
    } END {
      printf "summary fencing runs=%d fenced_logged=%d row_kept=%d woken_standby=%d recount_ok=%d all_ok=%d\n",
        n, fenced, kept, standby, rc, (n > 0 && fenced == n && kept == n && standby == n && rc == n)
    }' "$TMP/takeover.txt"
    echo "summary read_model_final model=$model recount=$count checkpoint=$pos equal=$([[ "$model" == "$count" ]] && echo 1 || echo 0)"
  } | tee -a "$TMP/summary.txt"
  for i in 1 2 3; do stop_node "$i"; done
}

# ------------------------------------------------------------------- main --

run() {
  bench_header "cluster benchmark"
  echo "# workloads: ${WORKLOADS[*]}; nodes n1..n3 on 127.0.0.1, schema $SCHEMA," \
    "ports (http metrics cluster) ${PORTS[*]}"
  echo "# DCB_CLUSTER_SEEDS=$SEEDS"
  local w
  for w in "${WORKLOADS[@]}"; do
    case "$w" in
      takeover) echo "# takeover nodes: $(describe "$COURSES_SRC" "$COURSES")" ;;
      *) echo "# $w nodes: $(describe "$NODE_SRC" "$NODE")" ;;
    esac
  done
  echo
  echo "## baseline (before)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" | tee "$TMP/before.txt"
  echo
  : >"$TMP/summary.txt"
  local w
  for w in "${WORKLOADS[@]}"; do
    "run_$w"
    echo
  done
  echo "## baseline (after)"
  bench/pgbench_baseline.sh "$BASELINE_SECONDS" | tee "$TMP/after.txt"
  echo
  echo "## summary"
  cat "$TMP/summary.txt"
  local b0 b1
  b0="$(baseline_value "$TMP/before.txt" single_c16 tps)"
  b1="$(baseline_value "$TMP/after.txt" single_c16 tps)"
  echo "baseline single_c16 before=$b0 after=$b1 (pgbench single-row insert transactions, 16 clients)"
  echo
  echo "# targets (same run)"
  local s="summary.txt"
  bench_target "takeover after SIGKILL of the owner, p50 of $TAKEOVER_RUNS (ms)" \
    "$(value $s takeover_kill p50_ms)" "<=" 1500
  bench_target "takeover after SIGSTOP of the owner, p50 of $TAKEOVER_RUNS (ms)" \
    "$(value $s takeover_stop p50_ms)" "<=" 4500
  bench_target "SIGSTOP: woken owner fenced, no write with its old epoch (all runs)" \
    "$(value $s fencing all_ok)" ">=" 1
  bench_target "read model equals the recount at the end" \
    "$(value $s read_model_final equal)" ">=" 1
  bench_target "append rate, three nodes / one node (median of rounds)" \
    "$(value $s append_three_over_one ratio)" ">=" 1
  bench_target "append rate, three nodes forwarding to one / one node (median of rounds)" \
    "$(value $s append_forward_over_one ratio)" ">=" 1
  bench_target "cross-node delivery p99 from the ack (ms; API.md 5: poll <= 1 s)" \
    "$(value $s latency_cross_node ack_p99_ms)" "<=" 1100
  local one three ooo
  one="$(value $s append_one rps)"
  ooo="$(value $s append_one_of_three rps)"
  three="$(value $s append_three rps)"
  if [[ -n "$one" ]]; then
    echo "  appends/s (medians): one node $one, node 1 of three $ooo, three nodes $three;" \
      "pgbench c16 $b0 / $b1 tps before / after:" \
      "one $(ratio "$one" "$b0") / $(ratio "$one" "$b1"), three $(ratio "$three" "$b0") / $(ratio "$three" "$b1")"
  fi
  local role
  for role in same_node cross_node; do
    [[ -n "$(value $s latency_$role ack_p50_ms)" ]] || continue
    echo "  delivery $role: from the ack p50/p99/max $(value $s latency_$role ack_p50_ms) /" \
      "$(value $s latency_$role ack_p99_ms) / $(value $s latency_$role ack_max_ms) ms;" \
      "from the send $(value $s latency_$role send_p50_ms) / $(value $s latency_$role send_p99_ms) /" \
      "$(value $s latency_$role send_max_ms) ms; $(value $s latency_$role received) received," \
      "$(value $s latency_$role missing) missing"
  done
  for role in takeover_kill takeover_stop; do
    [[ -n "$(value $s $role runs)" ]] || continue
    echo "  $role: $(value $s $role taken_over) of $(value $s $role runs) runs, p50" \
      "$(value $s $role p50_ms) ms, max $(value $s $role max_ms) ms, min $(value $s $role min_ms) ms"
  done
}

# Everything runs in this shell (no pipeline around run: the nodes must stay
# its children, for the clean-up); tee ignores Ctrl-C so the clean-up's
# output is saved too.
exec > >(
  trap '' INT TERM HUP
  exec tee "$OUT"
) 2>&1
run
echo "run_cluster_bench: saved to $OUT"
