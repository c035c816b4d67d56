// Versioned, idempotent schema migrations for the PostgreSQL store.
#include "store/pg_internal.hpp"
#include "store/pg_store.hpp"

#include <pqxx/pqxx>

#include <string>
#include <vector>

namespace dcbd {

namespace {

struct migration {
  int version;
  const char* name;
  // SQL with `@S` standing for the quoted schema and `@C` for the quoted
  // NOTIFY channel literal. Both are validated identifiers, not values.
  const char* sql;
};

// Never edit a released migration: append a new one.
const migration migrations[] = {
  {1, "events, head and indexes", R"sql(
CREATE TABLE @S.events (
  position    bigint      PRIMARY KEY,
  type        text        NOT NULL,
  tags        text[]      NOT NULL,
  data        bytea       NOT NULL,
  metadata    bytea       NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
-- Tag containment (tags @> ...) for tag items; fastupdate off keeps
-- condition checks from scanning a pending list.
CREATE INDEX events_tags_gin ON @S.events USING gin (tags)
  WITH (fastupdate = off);
-- Type-only items, in position order.
CREATE INDEX events_type_position ON @S.events (type, position);
-- The single lock every append takes; its value is the last position.
CREATE TABLE @S.head (
  id       boolean PRIMARY KEY DEFAULT true CHECK (id),
  position bigint  NOT NULL
);
INSERT INTO @S.head (id, position) VALUES (true, 0);
-- Outcomes of recent group appends, to resolve a commit whose reply was
-- lost with the connection. Tokens are time-ordered (microseconds since
-- 2024 shifted left by 12 bits, plus 12 random bits), so inserts append to
-- the right edge of the index and pruning is a range delete.
CREATE TABLE @S.append_outcomes (
  token   bigint   PRIMARY KEY,
  results bigint[] NOT NULL
);
)sql"},
  {2, "append_group function", R"sql(
-- Appends a group of requests in one statement (one round trip, autocommit).
-- Requests are 1-based. Per request: kind 0 = unconditional, 1 = query
-- items, 2 = match all; after = condition position (0 = whole log).
-- Events, tags, payloads and condition items come as flat arrays with
-- offsets. p_dep_*: the in-group dependencies the client computed with its
-- query matcher, ordered by p_dep_req: request p_dep_req[k]'s query matches
-- event p_dep_off[k] (0-based, the last such) of earlier request
-- p_dep_on[k]. Returns, per request, the last appended position or 0 when
-- its condition failed.
CREATE FUNCTION @S.append_group(
  p_token bigint,
  p_req_kind smallint[], p_req_after bigint[], p_req_nev int[],
  p_ev_req int[], p_ev_idx int[], p_ev_type text[],
  p_ev_tag_off int[], p_ev_tag_cnt int[], p_tags text[],
  p_ev_data_off int[], p_ev_data_len int[], p_data bytea,
  p_ev_meta_off int[], p_ev_meta_len int[], p_meta bytea,
  p_it_req int[], p_it_type_off int[], p_it_type_cnt int[], p_it_types text[],
  p_it_tag_off int[], p_it_tag_cnt int[], p_it_tags text[],
  p_dep_req int[], p_dep_on int[], p_dep_off int[])
RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
  n int := coalesce(array_length(p_req_kind, 1), 0);
  ndeps int := coalesce(array_length(p_dep_req, 1), 0);
  v_head bigint;
  v_next bigint;
  v_conflict boolean[] := array_fill(false, ARRAY[n]);
  v_start bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_result bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_ok boolean;
  r int;
  k int := 1;
BEGIN
  -- The lock. Every statement below takes a fresh snapshot (READ COMMITTED,
  -- volatile function), so it sees every append committed before ours.
  SELECT h.position INTO v_head FROM @S.head h FOR UPDATE;

  -- Check every condition item against the database in one query.
  IF array_length(p_it_req, 1) > 0 THEN
  FOR r IN
    SELECT i.req
      FROM unnest(p_it_req, p_it_type_off, p_it_type_cnt, p_it_tag_off,
                  p_it_tag_cnt) AS i(req, toff, tcnt, goff, gcnt)
     WHERE i.gcnt > 0 AND p_req_after[i.req] < v_head
       AND EXISTS (
         SELECT 1 FROM @S.events e
          WHERE e.tags @> p_it_tags[i.goff : i.goff + i.gcnt - 1]
            AND e.position > p_req_after[i.req]
            AND (i.tcnt = 0
                 OR e.type = ANY (p_it_types[i.toff : i.toff + i.tcnt - 1])))
    UNION
    SELECT i.req
      FROM unnest(p_it_req, p_it_type_off, p_it_type_cnt,
                  p_it_tag_cnt) AS i(req, toff, tcnt, gcnt)
     WHERE i.gcnt = 0 AND p_req_after[i.req] < v_head
       AND EXISTS (
         SELECT 1 FROM @S.events e
          WHERE e.type = ANY (p_it_types[i.toff : i.toff + i.tcnt - 1])
            AND e.position > p_req_after[i.req])
  LOOP
    v_conflict[r] := true;
  END LOOP;
  END IF;

  v_next := v_head + 1;
  FOR r IN 1 .. n LOOP
    v_ok := NOT v_conflict[r]
            AND NOT (p_req_kind[r] = 2 AND v_head > p_req_after[r]);
    WHILE k <= ndeps AND p_dep_req[k] = r LOOP
      IF v_start[p_dep_on[k]] > 0
         AND v_start[p_dep_on[k]] + p_dep_off[k] > p_req_after[r] THEN
        v_ok := false;
      END IF;
      k := k + 1;
    END LOOP;
    IF v_ok THEN
      v_start[r] := v_next;
      v_next := v_next + p_req_nev[r];
      v_result[r] := v_next - 1;
    END IF;
  END LOOP;

  IF v_next > v_head + 1 THEN
    INSERT INTO @S.events (position, type, tags, data, metadata)
    SELECT v_start[e.req] + e.idx, e.type,
           p_tags[e.toff : e.toff + e.tcnt - 1],
           substring(p_data FROM e.doff FOR e.dlen),
           substring(p_meta FROM e.moff FOR e.mlen)
      FROM unnest(p_ev_req, p_ev_idx, p_ev_type, p_ev_tag_off, p_ev_tag_cnt,
                  p_ev_data_off, p_ev_data_len, p_ev_meta_off, p_ev_meta_len)
           AS e(req, idx, type, toff, tcnt, doff, dlen, moff, mlen)
     WHERE v_start[e.req] > 0;
    UPDATE @S.head SET position = v_next - 1;
    PERFORM pg_notify(@C, (v_next - 1)::text);
    INSERT INTO @S.append_outcomes (token, results) VALUES (p_token, v_result);
    -- In-doubt groups are resolved within seconds; keep ten minutes.
    IF p_token % 1024 = 0 THEN
      DELETE FROM @S.append_outcomes
       WHERE token < p_token - (600000000::bigint << 12);
    END IF;
  END IF;
  RETURN v_result;
END
$fn$;
)sql"},
  {3, "projector checkpoints, leases and dead letters", R"sql(
-- One row per projector: its checkpoint and its lease. The epoch grows on
-- every takeover; every write of an instance is fenced with it.
CREATE TABLE @S.projectors (
  name       text        PRIMARY KEY,
  version    integer     NOT NULL DEFAULT 1,
  position   bigint      NOT NULL DEFAULT 0,
  epoch      bigint      NOT NULL DEFAULT 0,
  owner      text        NOT NULL DEFAULT '',
  paused     boolean     NOT NULL DEFAULT false,
  rebuild    boolean     NOT NULL DEFAULT false,
  failed     text        NOT NULL DEFAULT '',
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Events a projector could not apply, parked so the others go on.
CREATE TABLE @S.projector_dead_letters (
  projector text        NOT NULL REFERENCES @S.projectors (name)
                        ON DELETE CASCADE,
  position  bigint      NOT NULL,
  error     text        NOT NULL,
  attempts  integer     NOT NULL,
  at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (projector, position)
);
)sql"},
  {4, "durable jobs and triggers", R"sql(
-- Jobs (API.md §7). Future runs are rows with a future scheduled_at, taken
-- by the fetch when due. A final state sets finalized_at (River's CHECK).
CREATE SEQUENCE @S.job_leases;
CREATE TABLE @S.jobs (
  id               bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  lease            bigint,
  trigger_position bigint,
  created_at       timestamptz NOT NULL DEFAULT now(),
  scheduled_at     timestamptz NOT NULL DEFAULT now(),
  attempted_at     timestamptz,
  finalized_at     timestamptz,
  lease_expires_at timestamptz,
  priority         smallint    NOT NULL DEFAULT 1,
  attempt          smallint    NOT NULL DEFAULT 0,
  max_attempts     smallint    NOT NULL DEFAULT 20,
  state            text        NOT NULL DEFAULT 'available',
  queue            text        NOT NULL,
  kind             text        NOT NULL,
  args             jsonb       NOT NULL DEFAULT '{}',
  errors           jsonb       NOT NULL DEFAULT '[]',
  worker           text        NOT NULL DEFAULT '',
  unique_key       text,
  trigger_name     text,
  CONSTRAINT jobs_state CHECK (state IN ('available', 'scheduled', 'running',
    'retryable', 'completed', 'cancelled', 'discarded')),
  CONSTRAINT jobs_finalized CHECK ((finalized_at IS NOT NULL)
    = (state IN ('completed', 'cancelled', 'discarded'))),
  CONSTRAINT jobs_lease CHECK ((lease IS NOT NULL) = (state = 'running'))
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02);
-- The fetch: due jobs of a queue in priority order.
CREATE INDEX jobs_fetch ON @S.jobs (queue, priority, scheduled_at, id)
  WHERE state IN ('available', 'scheduled', 'retryable');
-- The scheduler: jobs waiting for their time.
CREATE INDEX jobs_due ON @S.jobs (scheduled_at)
  WHERE state IN ('scheduled', 'retryable');
-- The rescuer: running jobs by lease expiry.
CREATE INDEX jobs_running ON @S.jobs (lease_expires_at)
  WHERE state = 'running';
-- The pruner.
CREATE INDEX jobs_finalized_at ON @S.jobs (finalized_at)
  WHERE finalized_at IS NOT NULL;
-- One live job per unique key.
CREATE UNIQUE INDEX jobs_unique_key ON @S.jobs (unique_key)
  WHERE unique_key IS NOT NULL
    AND state NOT IN ('completed', 'cancelled', 'discarded');
-- One job per (trigger, event), ever: replays insert nothing twice.
CREATE UNIQUE INDEX jobs_trigger_event ON @S.jobs (trigger_name,
  trigger_position) WHERE trigger_name IS NOT NULL;
-- Triggers: a checkpointed producer of one job per matching event.
CREATE TABLE @S.job_triggers (
  name         text        PRIMARY KEY,
  query        jsonb       NOT NULL,
  queue        text        NOT NULL,
  kind         text        NOT NULL,
  priority     smallint    NOT NULL DEFAULT 1,
  max_attempts smallint    NOT NULL DEFAULT 20,
  position     bigint      NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
)sql"},
  {5, "cluster members", R"sql(
-- One row per node name: where its cluster agent listens and which start of
-- the process (incarnation) wrote it last. A node refreshes `last_seen`
-- while it runs and deletes its row when it stops gracefully; membership
-- itself is decided by the links between the nodes, never by this table.
CREATE TABLE @S.cluster_members (
  name         text        PRIMARY KEY,
  addr         text        NOT NULL,
  http         text        NOT NULL DEFAULT '',
  incarnation  text        NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  last_seen    timestamptz NOT NULL DEFAULT now()
);
)sql"},
  {6, "jobs: the lease length of the attempt", R"sql(
-- What the running attempt's worker asked for at fetch (or its latest
-- heartbeat): a heartbeat that names no length extends by it. A nullable
-- column without a default changes the catalog only.
ALTER TABLE @S.jobs ADD COLUMN lease_ms bigint;
)sql"},
  {7, "read lease on the head", R"sql(
-- The read lease (store/pg_lease.hpp): while a node holds it, no other
-- writer commits events, so the node's reads take no query of the head.
-- lease_owner and lease_until: the holder (a random id per process) and
-- until when, on the database's clock. writer and written_at: who committed
-- the last events, and when (0: a writer without a lease). All NULL at
-- first: adding them changes the catalog only.
ALTER TABLE @S.head ADD COLUMN lease_owner bigint,
  ADD COLUMN lease_until timestamptz, ADD COLUMN writer bigint,
  ADD COLUMN written_at timestamptz;
-- Migration 2's function keeps its body under another name; append_group
-- now takes the writer last (p_writer) and, when the group appended, waits
-- out another writer's lease before the commit (the head lock is the
-- group's: its holder cannot renew meanwhile) and ends it.
ALTER FUNCTION @S.append_group(bigint, smallint[], bigint[], int[], int[],
    int[], text[], int[], int[], text[], int[], int[], bytea, int[], int[],
    bytea, int[], int[], int[], text[], int[], int[], text[], int[], int[],
    int[])
  RENAME TO append_group_unleased;
CREATE FUNCTION @S.append_group(
  p_token bigint,
  p_req_kind smallint[], p_req_after bigint[], p_req_nev int[],
  p_ev_req int[], p_ev_idx int[], p_ev_type text[],
  p_ev_tag_off int[], p_ev_tag_cnt int[], p_tags text[],
  p_ev_data_off int[], p_ev_data_len int[], p_data bytea,
  p_ev_meta_off int[], p_ev_meta_len int[], p_meta bytea,
  p_it_req int[], p_it_type_off int[], p_it_type_cnt int[], p_it_types text[],
  p_it_tag_off int[], p_it_tag_cnt int[], p_it_tags text[],
  p_dep_req int[], p_dep_on int[], p_dep_off int[],
  p_writer bigint)
RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
  v_result bigint[];
  v_until timestamptz;
BEGIN
  v_result := @S.append_group_unleased(p_token, p_req_kind, p_req_after,
    p_req_nev, p_ev_req, p_ev_idx, p_ev_type, p_ev_tag_off, p_ev_tag_cnt,
    p_tags, p_ev_data_off, p_ev_data_len, p_data, p_ev_meta_off,
    p_ev_meta_len, p_meta, p_it_req, p_it_type_off, p_it_type_cnt,
    p_it_types, p_it_tag_off, p_it_tag_cnt, p_it_tags, p_dep_req, p_dep_on,
    p_dep_off);
  IF EXISTS (SELECT 1 FROM unnest(v_result) AS r(last) WHERE r.last > 0) THEN
    SELECT CASE WHEN h.lease_owner IS DISTINCT FROM p_writer
                THEN h.lease_until END
      INTO v_until FROM @S.head h;
    IF v_until > clock_timestamp() THEN
      PERFORM pg_sleep(extract(epoch FROM v_until - clock_timestamp()));
    END IF;
    UPDATE @S.head
       SET writer = p_writer, written_at = clock_timestamp(),
           lease_owner = CASE WHEN lease_owner = p_writer THEN lease_owner END;
  END IF;
  RETURN v_result;
END
$fn$;
-- The old signature, for processes still running an older build: they write
-- as writer 0, so they wait out any lease too.
CREATE FUNCTION @S.append_group(
  p_token bigint,
  p_req_kind smallint[], p_req_after bigint[], p_req_nev int[],
  p_ev_req int[], p_ev_idx int[], p_ev_type text[],
  p_ev_tag_off int[], p_ev_tag_cnt int[], p_tags text[],
  p_ev_data_off int[], p_ev_data_len int[], p_data bytea,
  p_ev_meta_off int[], p_ev_meta_len int[], p_meta bytea,
  p_it_req int[], p_it_type_off int[], p_it_type_cnt int[], p_it_types text[],
  p_it_tag_off int[], p_it_tag_cnt int[], p_it_tags text[],
  p_dep_req int[], p_dep_on int[], p_dep_off int[])
RETURNS bigint[] LANGUAGE sql AS $fn$
  SELECT @S.append_group(p_token, p_req_kind, p_req_after, p_req_nev,
    p_ev_req, p_ev_idx, p_ev_type, p_ev_tag_off, p_ev_tag_cnt, p_tags,
    p_ev_data_off, p_ev_data_len, p_data, p_ev_meta_off, p_ev_meta_len,
    p_meta, p_it_req, p_it_type_off, p_it_type_cnt, p_it_types, p_it_tag_off,
    p_it_tag_cnt, p_it_tags, p_dep_req, p_dep_on, p_dep_off, 0::bigint)
$fn$;
)sql"},
};

std::string expand(std::string sql, const std::string& schema,
                   const std::string& channel) {
  auto replace_all = [&sql](const std::string& from, const std::string& to) {
    for (auto pos = sql.find(from); pos != std::string::npos;
         pos = sql.find(from, pos + to.size()))
      sql.replace(pos, from.size(), to);
  };
  replace_all("@S", schema);
  replace_all("@C", channel);
  return sql;
}

} // namespace

int schema_version() noexcept {
  return migrations[std::size(migrations) - 1].version;
}

std::string notify_channel(const std::string& schema) {
  return "dcbd_" + schema;
}

int install_schema(const pg_config& cfg) {
  pg::check_schema_name(cfg.schema);
  return pg::guarded([&] {
    pqxx::connection conn{cfg.dsn};
    pqxx::work tx{conn};
    // Serializes installers of the same schema across processes.
    tx.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))",
                   "dcbd.install." + cfg.schema);
    auto s = tx.quote_name(cfg.schema);
    auto channel = tx.quote(notify_channel(cfg.schema));
    tx.exec("CREATE SCHEMA IF NOT EXISTS " + s);
    tx.exec("CREATE TABLE IF NOT EXISTS " + s
            + ".schema_migrations (version int PRIMARY KEY, name text NOT "
              "NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    auto current = tx.exec1("SELECT coalesce(max(version), 0) FROM " + s
                            + ".schema_migrations")[0]
                     .as<int>();
    if (current > schema_version())
      throw store_error{errc::internal,
                        "schema " + cfg.schema + " is at version "
                          + std::to_string(current)
                          + ", newer than this build ("
                          + std::to_string(schema_version()) + ")"};
    for (const auto& m : migrations) {
      if (m.version <= current)
        continue;
      tx.exec(expand(m.sql, s, channel));
      tx.exec_params("INSERT INTO " + s
                       + ".schema_migrations (version, name) VALUES ($1, $2)",
                     m.version, m.name);
    }
    // Give the planner real statistics for the one-row head (it otherwise
    // assumes thousands of rows and may plan reads badly).
    tx.exec("ANALYZE " + s + ".head");
    tx.commit();
    return schema_version();
  });
}

} // namespace dcbd
