# Shared by the bench/run_*_bench.sh scripts; source it after `cd "$ROOT"`.

# bench_require NAME BIN: checks that BIN was built and that ./dev set the
# DSN; sets DCB_POSTGRES_DSN and OUT (.bench/NAME-<timestamp>.txt).
bench_require() {
  local name="$1" bin="$2"
  if [[ ! -x "$bin" ]]; then
    echo "run_${name}_bench: $bin not found; build it with ./dev build release" >&2
    exit 1
  fi
  if [[ -z "${DCBD_TEST_PG_DSN:-}" ]]; then
    echo "run_${name}_bench: DCBD_TEST_PG_DSN is not set; run via ./dev bench $name" >&2
    exit 1
  fi
  export DCB_POSTGRES_DSN="${DCB_POSTGRES_DSN:-$DCBD_TEST_PG_DSN}"
  mkdir -p .bench
  OUT=".bench/${name}-$(date +%Y%m%d-%H%M%S).txt"
}

# bench_header TITLE: what the run was made on.
bench_header() {
  local commit
  echo "# dcbd $1 $(date -Iseconds)"
  if commit="$(git -c safe.directory='*' rev-parse --short HEAD 2>/dev/null)"; then
    git -c safe.directory='*' diff --quiet HEAD 2>/dev/null || commit+=" (dirty)"
  else
    commit=unknown
  fi
  echo "# commit $commit"
  echo "# host $(nproc) cpus, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)," \
    "$(psql "$DCBD_TEST_PG_DSN" -XtAc 'SHOW server_version' 2>/dev/null | sed 's/^/PostgreSQL /')"
  echo "# dsn $DCBD_TEST_PG_DSN"
}

# baseline_value FILE WORKLOAD KEY: a figure of a pgbench_baseline.sh output,
# e.g. `baseline_value before.txt single_c16 tps`.
baseline_value() {
  sed -nE "s/^baseline $2 .*\\b$3=([0-9.]+).*/\\1/p" "$1" | head -n1
}

# bench_value FILE NAME KEY: KEY of the `summary` or `baseline` line NAME in
# a bench program's output (empty when absent).
bench_value() {
  awk -v name="$2" -v key="$3" '
    ($1 == "summary" || $1 == "baseline") && $2 == name {
      for (i = 3; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == key) { print kv[2]; exit }
      }
    }' "$1"
}

# bench_target LABEL VALUE OP LIMIT: one targets-table line, "ok" or
# "MISSED" ("n/a" without a value).
bench_target() {
  local label="$1" v="$2" op="$3" limit="$4"
  if [[ -z "$v" ]]; then
    printf '  %-66s n/a\n' "$label"
    return 0
  fi
  awk -v l="$label" -v v="$v" -v op="$op" -v lim="$limit" 'BEGIN {
    ok = (op == ">=") ? (v >= lim) : (v <= lim)
    printf "  %-66s %12.3f %s %-10s %s\n", l, v, op, lim, ok ? "ok" : "MISSED"
  }'
}

# free_port: a TCP port free on 127.0.0.1 now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# psql_dsn ARGS..: psql on the benchmark's server, stopping at the first
# error, without NOTICEs (DROP SCHEMA ... CASCADE lists every object).
psql_dsn() {
  PGOPTIONS='-c client_min_messages=warning' \
    psql "$DCBD_TEST_PG_DSN" -v ON_ERROR_STOP=1 -qAt "$@"
}

# bench_start_node LOG NODE [ARGS..]: starts the node binary NODE on schema
# $SCHEMA with free HTTP and metrics ports (HTTP_PORT, METRICS_PORT; its pid
# in NODE_PID, for the caller to stop) and waits until it answers; prints
# LOG and fails when it does not within a minute.
bench_start_node() {
  local log="$1" node="$2" dcbctl="${BIN:-build/release/runtime}/dcbctl" i
  shift 2
  HTTP_PORT="$(free_port)"
  METRICS_PORT="$(free_port)"
  DCB_POSTGRES_DSN="$DCBD_TEST_PG_DSN" DCB_SCHEMA="$SCHEMA" \
    DCB_HTTP_ADDR="127.0.0.1:$HTTP_PORT" DCB_METRICS_ADDR="127.0.0.1:$METRICS_PORT" \
    "$node" "$@" >"$log" 2>&1 &
  NODE_PID=$!
  for ((i = 0; i < 300; i++)); do
    "$dcbctl" --url "http://127.0.0.1:$HTTP_PORT" status >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  cat "$log"
  echo "bench: $node did not start" >&2
  return 1
}
