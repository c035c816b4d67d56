#!/usr/bin/env bash
# Raw PostgreSQL baseline for the store benchmarks, measured in the same run.
#
# usage: bench/pgbench_baseline.sh [seconds]     (default 10 s per workload)
#
# Connection: DCBD_TEST_PG_DSN (host/port/user/dbname are taken from it), or
# the usual PGHOST/PGPORT/PGUSER/PGDATABASE.
# BASELINE_PRELOAD=N: each workload starts from a table of N rows (default 0,
# an empty table); table_rows= in the output is the count after the workload.
#
# Table: pgbench_baseline.events, shaped exactly like the store's events table.
# Workloads (pgbench -n -M prepared):
#   single      one autocommit INSERT of one event (random student/course tags),
#               with 1 client and with 16 clients
#   multi1000   one INSERT ... VALUES of 1000 rows per transaction, 1 client
# Output, one line per workload (after the '#' comment lines):
#   baseline single_c1 tps=... latency_ms=... clients=1 seconds=... table_rows=...
#   baseline single_c16 tps=... latency_ms=... clients=16 ...
#   baseline multi1000_c1 tps=... rows_per_s=... latency_ms=... clients=1 ...
# The schema is dropped at the end.
set -euo pipefail

SECS="${1:-10}"
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -gt 0 ]] || {
  echo "usage: $0 [seconds]" >&2
  exit 2
}
PRELOAD="${BASELINE_PRELOAD:-0}"
[[ "$PRELOAD" =~ ^[0-9]+$ ]] || {
  echo "BASELINE_PRELOAD must be a row count" >&2
  exit 2
}
SCHEMA=pgbench_baseline

die() {
  echo "pgbench_baseline: error: $*" >&2
  exit 1
}

# Take host/port/user/dbname from a "key=value key=value" DSN.
dsn_value() {
  local key="$1" kv
  for kv in ${DCBD_TEST_PG_DSN}; do
    [[ "$kv" == "$key="* ]] && {
      echo "${kv#*=}"
      return 0
    }
  done
  return 0
}

if [[ -n "${DCBD_TEST_PG_DSN:-}" ]]; then
  v="$(dsn_value host)" && [[ -n "$v" ]] && export PGHOST="$v"
  v="$(dsn_value port)" && [[ -n "$v" ]] && export PGPORT="$v"
  v="$(dsn_value user)" && [[ -n "$v" ]] && export PGUSER="$v"
  v="$(dsn_value dbname)" && [[ -n "$v" ]] && export PGDATABASE="$v"
  v="$(dsn_value password)" && [[ -n "$v" ]] && export PGPASSWORD="$v"
elif [[ -z "${PGHOST:-}" || -z "${PGPORT:-}" ]]; then
  die "set DCBD_TEST_PG_DSN (e.g. run via ./dev bench) or PGHOST and PGPORT"
fi
export PGUSER="${PGUSER:-postgres}"
export PGDATABASE="${PGDATABASE:-postgres}"

command -v pgbench >/dev/null || die "pgbench not found (Debian: postgresql-client-15 / postgresql-15)"
command -v psql >/dev/null || die "psql not found"

sql() { psql -X -q -v ON_ERROR_STOP=1 -tA "$@"; }

TMP="$(mktemp -d -t pgbench_baseline.XXXXXX)"
cleanup() {
  sql -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

sql -c "SELECT 1" >/dev/null || die "cannot connect to ${PGHOST}:${PGPORT}"

# -- schema (same shape and indexes as the store's events table) ------------
sql <<SQL >/dev/null
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS $SCHEMA CASCADE;
CREATE SCHEMA $SCHEMA;
CREATE TABLE $SCHEMA.events (
  position bigserial PRIMARY KEY,
  type text NOT NULL,
  tags text[] NOT NULL,
  data bytea NOT NULL,
  metadata bytea NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON $SCHEMA.events USING gin (tags) WITH (fastupdate = off);
CREATE INDEX ON $SCHEMA.events (type, position);
SQL

# ~60 bytes of JSON, as bytea hex.
DATA_JSON='{"studentId":"student-4711","courseId":"course-42","ts":1}'
DATA_HEX="$(printf '%s' "$DATA_JSON" | od -An -v -tx1 | tr -d ' \n')"
DATA_LIT="'\\x${DATA_HEX}'::bytea"

# -- workload scripts ---------------------------------------------------------
cat >"$TMP/single.sql" <<SQL
\\set sid random(1, 10000)
\\set cid random(1, 1000)
INSERT INTO $SCHEMA.events(type, tags, data, metadata) VALUES ('StudentSubscribed', ARRAY['student:' || :sid, 'course:' || :cid], $DATA_LIT, '\\x'::bytea);
SQL

{
  echo "INSERT INTO $SCHEMA.events(type, tags, data, metadata) VALUES"
  for ((i = 1; i <= 1000; i++)); do
    sep=","
    ((i == 1000)) && sep=";"
    echo "('StudentSubscribed', ARRAY['student:$((i * 7 % 10000 + 1))', 'course:$((i % 1000 + 1))'], $DATA_LIT, '\\x'::bytea)$sep"
  done
} >"$TMP/multi1000.sql"

table_rows() { sql -c "SELECT count(*) FROM $SCHEMA.events"; }

# Every workload starts from the same table: empty, or BASELINE_PRELOAD rows.
reset_table() {
  sql -c "TRUNCATE $SCHEMA.events RESTART IDENTITY" >/dev/null
  if ((PRELOAD > 0)); then
    sql <<SQL >/dev/null
INSERT INTO $SCHEMA.events(type, tags, data, metadata)
SELECT 'StudentSubscribed',
       ARRAY['student:' || (1 + i % 10000), 'course:' || (1 + i % 1000)],
       $DATA_LIT, '\\x'::bytea
FROM generate_series(1, $PRELOAD) AS i;
SQL
  fi
  sql -c "VACUUM ANALYZE $SCHEMA.events" >/dev/null
  sql -c "CHECKPOINT" >/dev/null 2>&1 || true
}

# run_pgbench NAME CLIENTS THREADS SCRIPT [ROWS_PER_TX]
run_pgbench() {
  local name="$1" clients="$2" threads="$3" script="$4" rows="${5:-}"
  local out="$TMP/$name.out" tps lat line
  reset_table
  if ! pgbench -n -M prepared -c "$clients" -j "$threads" -T "$SECS" \
    -f "$script" >"$out" 2>&1; then
    cat "$out" >&2
    die "pgbench $name failed"
  fi
  tps="$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\).*/\1/p' "$out")"
  lat="$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' "$out")"
  [[ -n "$tps" ]] || {
    cat "$out" >&2
    die "could not parse tps of $name"
  }
  line="baseline $name tps=$tps"
  [[ -n "$rows" ]] && line+=" rows_per_s=$(awk -v t="$tps" -v r="$rows" 'BEGIN { printf "%.1f", t * r }')"
  line+=" latency_ms=${lat:-?} clients=$clients seconds=$SECS table_rows=$(table_rows)"
  echo "$line"
}

echo "# pgbench baseline: ${PGHOST}:${PGPORT}/${PGDATABASE}, $SECS s per workload," \
  "table $SCHEMA.events (gin(tags), (type, position)) reset to $PRELOAD rows before each workload," \
  "event data ${#DATA_JSON} bytes; $(pgbench --version)"
run_pgbench single_c1 1 1 "$TMP/single.sql"
run_pgbench single_c16 16 2 "$TMP/single.sql"
run_pgbench multi1000_c1 1 1 "$TMP/multi1000.sql" 1000
