// The jobs table's SQL: enqueue, fetch, batched outcomes fenced by lease
// tokens, heartbeats, rescue, scheduling, pruning, management and
// triggers.
#include "store/pg_jobs.hpp"

#include "store/pg_group.hpp"
#include "store/pg_internal.hpp"
#include "store/pg_pool.hpp"
#include "store/pg_store.hpp"
#include "store/validation.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <unordered_map>

namespace dcbd {

namespace {

// The columns of a job, in the order `read_job` expects (prefix `d.`).
constexpr const char* job_columns
  = "d.id, d.queue, d.kind, d.args::text, d.state, d.attempt, "
    "d.max_attempts, d.priority, "
    "floor(extract(epoch FROM d.created_at) * 1000000)::bigint, "
    "floor(extract(epoch FROM d.scheduled_at) * 1000000)::bigint, "
    "coalesce(floor(extract(epoch FROM d.attempted_at) * 1000000)::bigint, "
    "0), "
    "coalesce(floor(extract(epoch FROM d.finalized_at) * 1000000)::bigint, "
    "0), coalesce(d.lease, 0), "
    "coalesce(floor(extract(epoch FROM d.lease_expires_at) * "
    "1000000)::bigint, 0), d.worker, coalesce(d.unique_key, ''), "
    "coalesce(d.trigger_name, ''), coalesce(d.trigger_position, 0), "
    "d.errors::text";

job_state state_of(const pqxx::field& f) {
  auto s = parse_job_state(f.c_str());
  if (!s)
    throw store_error{errc::internal,
                      std::string{"unknown job state "} + f.c_str()};
  return *s;
}

job read_job(const pqxx::row& r) {
  job j;
  j.id = r[0].as<std::int64_t>();
  j.queue = r[1].as<std::string>();
  j.kind = r[2].as<std::string>();
  j.args = r[3].as<std::string>();
  j.state = state_of(r[4]);
  j.attempt = r[5].as<int>();
  j.max_attempts = r[6].as<int>();
  j.priority = r[7].as<int>();
  j.created_at_us = r[8].as<std::int64_t>();
  j.scheduled_at_us = r[9].as<std::int64_t>();
  j.attempted_at_us = r[10].as<std::int64_t>();
  j.finalized_at_us = r[11].as<std::int64_t>();
  j.lease = r[12].as<std::int64_t>();
  j.lease_expires_at_us = r[13].as<std::int64_t>();
  j.worker = r[14].as<std::string>();
  j.unique_key = r[15].as<std::string>();
  j.trigger = r[16].as<std::string>();
  j.trigger_position = r[17].as<std::uint64_t>();
  j.errors = r[18].as<std::string>();
  return j;
}

constexpr const char* live_key
  = "unique_key IS NOT NULL AND state NOT IN ('completed', 'cancelled', "
    "'discarded')";

// The parameters of a batch insert, as array literals.
struct insert_arrays {
  pg::array_builder queue, kind, args, priority, run_at, delay, attempts, key;

  explicit insert_arrays(const std::vector<job_request>& jobs) {
    for (const auto& j : jobs) {
      queue.add(j.queue);
      kind.add(j.kind);
      args.add(j.args);
      priority.add(std::int64_t{j.priority});
      if (j.run_at_us)
        run_at.add(*j.run_at_us);
      else
        run_at.add_null();
      delay.add(j.delay_ms);
      attempts.add(std::int64_t{j.max_attempts});
      key.add(j.unique_key);
    }
  }
};

// Batch insert: ids are drawn first so that each input row maps to its job
// (or to none: a live job holds its unique key). One NOTIFY per queue.
std::string insert_sql(const std::string& s) {
  return "WITH input AS MATERIALIZED (SELECT i.*, nextval('" + s
         + ".jobs_id_seq'::regclass) AS id, "
         + pg::job_start_sql("i.run_at", "i.delay")
         + " AS at FROM unnest($1::text[], "
           "$2::text[], $3::text[], $4::int[], $5::bigint[], $6::bigint[], "
           "$7::int[], $8::text[]) WITH ORDINALITY AS i(queue, kind, args, "
           "priority, run_at, delay, attempts, ukey, ord)), "
           "ins AS (INSERT INTO "
         + s
         + ".jobs (id, queue, kind, args, priority, scheduled_at, state, "
           "max_attempts, unique_key) SELECT id, queue, kind, args::jsonb, "
           "priority, at, CASE WHEN at > now() THEN 'scheduled' ELSE "
           "'available' END, attempts, nullif(ukey, '') FROM input ORDER BY "
           "ord ON CONFLICT (unique_key) WHERE "
         + live_key
         + " DO NOTHING RETURNING id, state, queue), "
           "n AS (SELECT count(pg_notify($9, q.queue)) AS c FROM (SELECT "
           "DISTINCT queue FROM ins) q) "
           "SELECT i.id, coalesce(ins.state, ''), (SELECT c FROM n) FROM "
           "input i LEFT JOIN ins ON ins.id = i.id ORDER BY i.ord";
}

// Inserts `jobs` in `tx`; duplicates answer the live job holding the key.
std::vector<enqueued_job> insert_jobs(pqxx::work& tx, const std::string& s,
                                      const std::string& channel,
                                      const std::vector<job_request>& jobs) {
  std::vector<enqueued_job> out(jobs.size());
  std::vector<std::size_t> todo(jobs.size());
  for (std::size_t i = 0; i < todo.size(); ++i)
    todo[i] = i;
  // A key whose holder finishes between the insert and the lookup is
  // inserted again; a few rounds settle it.
  for (int round = 0; !todo.empty(); ++round) {
    if (round == 5)
      throw store_error{errc::unavailable,
                        "unique keys kept changing hands; try again"};
    std::vector<job_request> batch;
    batch.reserve(todo.size());
    for (auto i : todo)
      batch.push_back(jobs[i]);
    insert_arrays a{batch};
    auto rows = tx.exec_params(insert_sql(s), a.queue.str(), a.kind.str(),
                               a.args.str(), a.priority.str(), a.run_at.str(),
                               a.delay.str(), a.attempts.str(), a.key.str(),
                               channel);
    std::vector<std::size_t> missing;
    for (std::size_t k = 0; k < rows.size(); ++k) {
      auto state = rows[k][1].as<std::string>();
      auto& o = out[todo[k]];
      if (!state.empty()) {
        o.id = rows[k][0].as<std::int64_t>();
        o.state = *parse_job_state(state);
      } else {
        missing.push_back(todo[k]);
      }
    }
    if (missing.empty())
      break;
    pg::array_builder keys;
    for (auto i : missing)
      keys.add(jobs[i].unique_key);
    auto held = tx.exec_params("SELECT unique_key, id, state FROM " + s
                                 + ".jobs WHERE unique_key = ANY($1::text[]) "
                                   "AND "
                                 + live_key,
                               keys.str());
    std::unordered_map<std::string, std::pair<std::int64_t, job_state>> by_key;
    for (const auto& r : held)
      by_key[r[0].as<std::string>()] = {r[1].as<std::int64_t>(),
                                        state_of(r[2])};
    todo.clear();
    for (auto i : missing) {
      auto f = by_key.find(jobs[i].unique_key);
      if (f == by_key.end()) {
        todo.push_back(i);
        continue;
      }
      out[i].id = f->second.first;
      out[i].state = f->second.second;
      out[i].duplicate = true;
    }
  }
  return out;
}

} // namespace

std::string job_channel(const std::string& schema) {
  return "dcbd_jobs_" + schema;
}

struct pg_jobs::impl {
  pg_config cfg;
  std::string s;
  std::string channel;
  std::unique_ptr<pg_pool> pool;
  std::string fetch_sql, finish_sql, heartbeat_sql;

  template <class F>
  auto in_tx(F&& f) {
    return pool->with_connection([&](pg_pool::lease& l) {
      pqxx::work tx{l.conn()};
      auto result = f(tx, l);
      tx.commit();
      return result;
    });
  }

  template <class F>
  auto plain(F&& f) {
    return pool->with_connection([&](pg_pool::lease& l) {
      pqxx::nontransaction tx{l.conn()};
      return f(tx, l);
    });
  }

  std::optional<job> get(pqxx::transaction_base& tx, std::int64_t id) {
    auto r = tx.exec_params(std::string{"SELECT "} + job_columns + " FROM " + s
                              + ".jobs d WHERE d.id = $1",
                            id);
    if (r.empty())
      return std::nullopt;
    return read_job(r[0]);
  }
};

pg_jobs::pg_jobs(pg_config cfg, std::size_t pool) : impl_(new impl) {
  auto& m = *impl_;
  install_schema(cfg);
  cfg.pool_size = std::max<std::size_t>(pool, 1);
  m.cfg = cfg;
  m.s = pg::quoted(cfg.schema);
  m.channel = job_channel(cfg.schema);
  m.pool = std::make_unique<pg_pool>(cfg);
  m.fetch_sql
    = "WITH j AS MATERIALIZED (SELECT id FROM " + m.s
      + ".jobs WHERE queue = $1 AND state IN ('available', 'scheduled', "
        "'retryable') AND scheduled_at <= now() AND (cardinality($2::text[]) "
        "= 0 OR kind = ANY($2::text[])) ORDER BY priority, scheduled_at, id "
        "LIMIT $3 FOR UPDATE SKIP LOCKED) UPDATE "
      + m.s
      + ".jobs d SET state = 'running', attempt = d.attempt + 1, "
        "attempted_at = now(), lease = nextval('"
      + m.s
      + ".job_leases'::regclass), lease_expires_at = now() + $4 * interval "
        "'1 millisecond', lease_ms = $4::bigint, worker = $5 FROM j WHERE "
        "d.id = "
        "j.id RETURNING "
      + job_columns;
  // Outcome kinds: 0 complete, 1 fail, 2 snooze, 3 discard (job_outcome).
  m.finish_sql
    = "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], "
      "$3::int[], $4::text[], $5::bigint[]) WITH ORDINALITY AS u(id, lease, "
      "what, error, delay, ord)), "
      "upd AS (UPDATE "
      + m.s
      + ".jobs d SET "
        "state = CASE WHEN u.what = 0 THEN 'completed' WHEN u.what = 2 THEN "
        "'scheduled' WHEN u.what = 3 OR d.attempt >= d.max_attempts THEN "
        "'discarded' ELSE 'retryable' END, "
        "finalized_at = CASE WHEN u.what = 0 OR u.what = 3 OR (u.what = 1 AND "
        "d.attempt >= d.max_attempts) THEN now() END, "
        "scheduled_at = CASE WHEN u.what = 2 OR (u.what = 1 AND d.attempt < "
        "d.max_attempts) THEN now() + CASE WHEN u.delay >= 0 THEN u.delay * "
        "interval '1 millisecond' ELSE least(power(d.attempt, 4), 86400) * "
        "(0.9 + random() * 0.2) * interval '1 second' END ELSE "
        "d.scheduled_at END, "
        "attempt = CASE WHEN u.what = 2 THEN greatest(d.attempt - 1, 0) ELSE "
        "d.attempt END, "
        "errors = CASE WHEN u.what IN (1, 3) THEN d.errors || "
        "jsonb_build_array(jsonb_build_object('attempt', d.attempt, 'at', "
        "now(), 'error', u.error)) ELSE d.errors END, "
        "lease = NULL, lease_expires_at = NULL "
        "FROM u WHERE d.id = u.id AND d.state = 'running' AND d.lease = "
        "u.lease RETURNING d.id, d.state, d.queue, d.kind, d.attempted_at) "
        "SELECT coalesce(upd.state, ''), coalesce(upd.queue, ''), "
        "coalesce(upd.kind, ''), coalesce(floor(extract(epoch FROM "
        "upd.attempted_at) * 1000000)::bigint, 0) FROM u LEFT JOIN upd ON "
        "upd.id = u.id "
        "ORDER BY u.ord";
  m.heartbeat_sql
    = "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) WITH "
      "ORDINALITY AS u(id, lease, ord)), upd AS (UPDATE "
      + m.s
      + ".jobs d SET lease_expires_at = now() + coalesce(nullif($3::bigint, "
        "0), d.lease_ms, 30000) * interval '1 millisecond', lease_ms = "
        "coalesce(nullif($3::bigint, 0), d.lease_ms) FROM u WHERE d.id = u.id "
        "AND d.state = 'running' AND "
        "d.lease = u.lease RETURNING d.id) SELECT upd.id IS NOT NULL FROM u "
        "LEFT JOIN upd ON upd.id = u.id ORDER BY u.ord";
}

pg_jobs::~pg_jobs() = default;

std::vector<enqueued_job> pg_jobs::enqueue(std::vector<job_request> jobs,
                                           const job_limits& lim) {
  if (jobs.size() > lim.max_jobs_per_request)
    throw store_error{errc::invalid_argument,
                      "jobs: at most "
                        + std::to_string(lim.max_jobs_per_request)
                        + " per request"};
  for (std::size_t i = 0; i < jobs.size(); ++i)
    validate(jobs[i], "jobs[" + std::to_string(i) + "]", lim);
  if (jobs.empty())
    return {};
  auto& m = *impl_;
  return m.in_tx([&](pqxx::work& tx, pg_pool::lease&) {
    return insert_jobs(tx, m.s, m.channel, jobs);
  });
}

std::vector<enqueued_job>
pg_jobs::enqueue(pqxx::work& tx, const std::vector<job_request>& jobs) {
  if (jobs.empty())
    return {};
  return insert_jobs(tx, impl_->s, impl_->channel, jobs);
}

std::vector<job> pg_jobs::fetch(const job_fetch& f) {
  if (f.max == 0)
    return {};
  auto& m = *impl_;
  auto rows = m.plain([&](pqxx::nontransaction& tx, pg_pool::lease& l) {
    return tx.exec_prepared(l.statement("jobs_fetch", m.fetch_sql), f.queue,
                            pg::text_array(f.kinds),
                            static_cast<std::int64_t>(f.max), f.lease_ms,
                            f.worker);
  });
  std::vector<job> out;
  out.reserve(rows.size());
  for (const auto& r : rows)
    out.push_back(read_job(r));
  std::sort(out.begin(), out.end(), [](const job& a, const job& b) {
    return std::tie(a.priority, a.scheduled_at_us, a.id)
           < std::tie(b.priority, b.scheduled_at_us, b.id);
  });
  return out;
}

std::vector<finished_job>
pg_jobs::finish_detailed(const std::vector<job_outcome>& outcomes) {
  if (outcomes.empty())
    return {};
  pg::array_builder id, lease, what, error, delay;
  for (const auto& o : outcomes) {
    id.add(o.id);
    lease.add(o.lease);
    what.add(static_cast<std::int64_t>(o.what));
    // Workers' messages may quote raw input: whatever they are, the batch
    // must not fail on them.
    error.add(storable_text(o.error, job_limits{}.max_error_bytes));
    delay.add(o.delay_ms ? std::max<std::int64_t>(*o.delay_ms, 0)
                         : std::int64_t{-1});
  }
  auto& m = *impl_;
  auto rows = m.plain([&](pqxx::nontransaction& tx, pg_pool::lease& l) {
    return tx.exec_prepared(l.statement("jobs_finish", m.finish_sql), id.str(),
                            lease.str(), what.str(), error.str(), delay.str());
  });
  std::vector<finished_job> out(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (r[0].c_str()[0] == '\0')
      continue;
    out[i].state = state_of(r[0]);
    out[i].queue = r[1].as<std::string>();
    out[i].kind = r[2].as<std::string>();
    out[i].attempted_at_us = r[3].as<std::int64_t>();
  }
  return out;
}

std::vector<std::optional<job_state>>
pg_jobs::finish(const std::vector<job_outcome>& outcomes) {
  std::vector<std::optional<job_state>> out;
  for (auto& f : finish_detailed(outcomes))
    out.push_back(f.state);
  return out;
}

bool pg_jobs::complete(pqxx::work& tx, std::int64_t id, std::int64_t lease) {
  auto r = tx.exec_params("UPDATE " + impl_->s
                            + ".jobs SET state = 'completed', finalized_at = "
                              "now(), lease = NULL, lease_expires_at = NULL "
                              "WHERE id = $1 AND state = 'running' AND lease "
                              "= $2",
                          id, lease);
  return r.affected_rows() == 1;
}

std::vector<bool> pg_jobs::heartbeat(const std::vector<std::int64_t>& ids,
                                     const std::vector<std::int64_t>& leases,
                                     std::int64_t lease_ms) {
  if (ids.empty())
    return {};
  pg::array_builder a, b;
  for (auto x : ids)
    a.add(x);
  for (auto x : leases)
    b.add(x);
  auto& m = *impl_;
  auto rows = m.plain([&](pqxx::nontransaction& tx, pg_pool::lease& l) {
    return tx.exec_prepared(l.statement("jobs_heartbeat", m.heartbeat_sql),
                            a.str(), b.str(), lease_ms);
  });
  std::vector<bool> out;
  out.reserve(rows.size());
  for (const auto& r : rows)
    out.push_back(r[0].as<bool>());
  return out;
}

std::vector<rescued_job> pg_jobs::rescue(std::size_t limit) {
  auto& m = *impl_;
  auto sql
    = "WITH r AS MATERIALIZED (SELECT id FROM " + m.s
      + ".jobs WHERE state = 'running' AND lease_expires_at < now() ORDER BY "
        "lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED), "
        "upd AS (UPDATE "
      + m.s
      + ".jobs d SET state = CASE WHEN d.attempt >= d.max_attempts THEN "
        "'discarded' ELSE 'available' END, finalized_at = CASE WHEN "
        "d.attempt >= d.max_attempts THEN now() END, scheduled_at = now(), "
        "errors = d.errors || jsonb_build_array(jsonb_build_object('attempt', "
        "d.attempt, 'at', now(), 'error', 'lease expired: worker ' || "
        "d.worker || ' gave no sign of life')), lease = NULL, "
        "lease_expires_at = NULL FROM r WHERE d.id = r.id RETURNING d.id, "
        "d.queue, d.kind, d.state), "
        "n AS (SELECT count(pg_notify($2, q.queue)) AS c FROM (SELECT "
        "DISTINCT queue FROM upd WHERE state = 'available') q) "
        "SELECT upd.*, (SELECT c FROM n) FROM upd";
  auto rows = m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return tx.exec_params(sql, static_cast<std::int64_t>(limit), m.channel);
  });
  std::vector<rescued_job> out;
  for (const auto& r : rows)
    out.push_back({r[0].as<std::int64_t>(), r[1].as<std::string>(),
                   r[2].as<std::string>(), state_of(r[3])});
  return out;
}

std::size_t pg_jobs::promote_due(std::size_t limit) {
  auto& m = *impl_;
  auto sql = "UPDATE " + m.s
             + ".jobs SET state = 'available' WHERE id IN (SELECT id FROM "
             + m.s
             + ".jobs WHERE state IN ('scheduled', 'retryable') AND "
               "scheduled_at <= now() ORDER BY scheduled_at LIMIT $1 FOR "
               "UPDATE SKIP LOCKED)";
  return m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return static_cast<std::size_t>(
      tx.exec_params(sql, static_cast<std::int64_t>(limit)).affected_rows());
  });
}

std::size_t pg_jobs::prune(const job_retention& r) {
  auto& m = *impl_;
  // The oldest first, along the partial index, which the LEAST bound keeps
  // to the rows past the shorter retention; SKIP LOCKED so that the nodes
  // pruning beside each other never wait for one another.
  auto sql = "DELETE FROM " + m.s + ".jobs WHERE id IN (SELECT id FROM " + m.s
             + ".jobs WHERE finalized_at IS NOT NULL AND finalized_at < now() "
               "- least($1::bigint, $2::bigint) * interval '1 second' AND "
               "finalized_at < now() - CASE WHEN state = 'discarded' THEN "
               "$2::bigint ELSE $1::bigint END * interval '1 second' ORDER BY "
               "finalized_at LIMIT $3 FOR UPDATE SKIP LOCKED)";
  return m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return static_cast<std::size_t>(
      tx.exec_params(sql, static_cast<std::int64_t>(r.completed.count()),
                     static_cast<std::int64_t>(r.discarded.count()),
                     static_cast<std::int64_t>(r.batch))
        .affected_rows());
  });
}

std::optional<job> pg_jobs::get(std::int64_t id) {
  auto& m = *impl_;
  return m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return m.get(tx, id);
  });
}

std::vector<job> pg_jobs::list(const job_filter& f) {
  auto& m = *impl_;
  std::string sql = std::string{"SELECT "} + job_columns + " FROM " + m.s
                    + ".jobs d WHERE ($1 = '' OR d.queue = $1) AND ($2 = '' "
                      "OR d.state = $2) AND ($3 = '' OR d.kind = $3) AND ($4 "
                      "= 0 OR d.id < $4) ORDER BY d.id DESC LIMIT $5";
  auto rows = m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return tx.exec_params(sql, f.queue,
                          std::string{f.state ? to_string(*f.state) : ""},
                          f.kind, f.before_id,
                          static_cast<std::int64_t>(f.limit));
  });
  std::vector<job> out;
  out.reserve(rows.size());
  for (const auto& r : rows)
    out.push_back(read_job(r));
  return out;
}

job_change pg_jobs::cancel(std::int64_t id) {
  auto& m = *impl_;
  return m.in_tx([&](pqxx::work& tx, pg_pool::lease&) {
    auto r = tx.exec_params(
      "UPDATE " + m.s
        + ".jobs d SET state = 'cancelled', finalized_at = now(), lease = "
          "NULL, lease_expires_at = NULL WHERE d.id = $1 AND d.state NOT IN "
          "('completed', 'cancelled', 'discarded') RETURNING "
        + job_columns,
      id);
    if (!r.empty())
      return job_change{job_change::code::ok, read_job(r[0])};
    auto now = m.get(tx, id);
    if (!now)
      return job_change{job_change::code::not_found, {}};
    return job_change{job_change::code::conflict, *now};
  });
}

job_change pg_jobs::retry(std::int64_t id) {
  auto& m = *impl_;
  try {
    return m.in_tx([&](pqxx::work& tx, pg_pool::lease&) {
      auto r = tx.exec_params(
        "UPDATE " + m.s
          + ".jobs d SET state = 'available', scheduled_at = now(), "
            "finalized_at = NULL, max_attempts = greatest(d.max_attempts, "
            "d.attempt + 1) WHERE d.id = $1 AND d.state <> 'running' "
            "RETURNING "
          + job_columns,
        id);
      if (!r.empty()) {
        tx.exec_params("SELECT pg_notify($1, $2)", m.channel,
                       r[0][1].as<std::string>());
        return job_change{job_change::code::ok, read_job(r[0])};
      }
      auto now = m.get(tx, id);
      if (!now)
        return job_change{job_change::code::not_found, {}};
      return job_change{job_change::code::conflict, *now};
    });
  } catch (const store_error& e) {
    // A live job holds the unique key again.
    if (std::string_view{e.what()}.find("jobs_unique_key")
        == std::string_view::npos)
      throw;
    auto now = get(id);
    if (!now)
      return job_change{job_change::code::not_found, {}};
    return job_change{job_change::code::conflict, *now};
  }
}

std::vector<queue_counts> pg_jobs::counts() {
  auto& m = *impl_;
  auto rows = m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return tx.exec("SELECT queue, state, count(*) FROM " + m.s
                   + ".jobs GROUP BY queue, state ORDER BY queue");
  });
  std::vector<queue_counts> out;
  for (const auto& r : rows) {
    auto q = r[0].as<std::string>();
    if (out.empty() || out.back().queue != q)
      out.push_back(queue_counts{q, {}});
    auto st = state_of(r[1]);
    out.back().by_state[static_cast<std::size_t>(st)]
      = r[2].as<std::uint64_t>();
  }
  return out;
}

bool pg_jobs::create_trigger(const job_trigger& t,
                             std::optional<std::uint64_t> from) {
  validate_job_name(t.name, "name");
  job_request probe;
  probe.queue = t.queue;
  probe.kind = t.kind;
  probe.priority = t.priority;
  probe.max_attempts = t.max_attempts;
  validate(probe, "trigger");
  if (from && *from > static_cast<std::uint64_t>(INT64_MAX))
    throw store_error{errc::invalid_argument, "from must fit a position"};
  auto& m = *impl_;
  return m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    // A position past the head is refused, as a subscription's `after` is:
    // the head only grows, so one that passes here stays valid.
    if (from) {
      auto head = tx.exec1("SELECT position FROM " + m.s + ".head")[0]
                    .as<std::uint64_t>();
      if (*from > head)
        throw store_error{errc::invalid_argument,
                          "from (" + std::to_string(*from)
                            + ") is past the head of the log ("
                            + std::to_string(head) + ")"};
    }
    auto r = tx.exec_params(
      "INSERT INTO " + m.s
        + ".job_triggers (name, query, queue, kind, priority, max_attempts, "
          "position) VALUES ($1, $2::jsonb, $3, $4, $5, $6, CASE WHEN "
          "$7::bigint < 0 THEN (SELECT position FROM "
        + m.s
        + ".head) ELSE $7::bigint END) ON CONFLICT (name) DO NOTHING "
          "RETURNING name",
      t.name, query_to_json(t.query), t.queue, t.kind, t.priority,
      t.max_attempts, from ? static_cast<std::int64_t>(*from) : -1);
    return !r.empty();
  });
}

std::vector<job_trigger> pg_jobs::triggers() {
  auto& m = *impl_;
  auto rows = m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return tx.exec(
      "SELECT name, query::text, queue, kind, position, "
      "floor(extract(epoch FROM created_at) * 1000000)::bigint, priority, "
      "max_attempts FROM "
      + m.s + ".job_triggers ORDER BY name");
  });
  std::vector<job_trigger> out;
  for (const auto& r : rows) {
    job_trigger t;
    t.name = r[0].as<std::string>();
    t.query = query_from_json(r[1].as<std::string>());
    t.queue = r[2].as<std::string>();
    t.kind = r[3].as<std::string>();
    t.position = r[4].as<std::uint64_t>();
    t.created_at_us = r[5].as<std::int64_t>();
    t.priority = r[6].as<int>();
    t.max_attempts = r[7].as<int>();
    out.push_back(std::move(t));
  }
  return out;
}

bool pg_jobs::delete_trigger(const std::string& name) {
  auto& m = *impl_;
  return m.plain([&](pqxx::nontransaction& tx, pg_pool::lease&) {
    return tx.exec_params(
               "DELETE FROM " + m.s + ".job_triggers WHERE name = $1", name)
             .affected_rows()
           == 1;
  });
}

std::optional<pg_jobs::fired>
pg_jobs::fire(const std::string& trigger,
              const std::vector<sequenced_event>& events, std::uint64_t upto) {
  auto& m = *impl_;
  return m.in_tx([&](pqxx::work& tx, pg_pool::lease&) -> std::optional<fired> {
    auto row = tx.exec_params("SELECT position, queue, kind, priority, "
                              "max_attempts FROM "
                                + m.s
                                + ".job_triggers WHERE name = $1 FOR UPDATE",
                              trigger);
    if (row.empty())
      return std::nullopt;
    auto checkpoint = row[0][0].as<std::uint64_t>();
    pg::array_builder args, pos;
    std::size_t n = 0;
    for (const auto& e : events) {
      if (e.position <= checkpoint)
        continue;
      args.add(trigger_args(trigger, e));
      pos.add(static_cast<std::int64_t>(e.position));
      ++n;
    }
    fired out;
    if (n > 0) {
      // One NOTIFY when anything was inserted, and the count.
      auto r = tx.exec_params(
        "WITH ins AS (INSERT INTO " + m.s
          + ".jobs (queue, kind, args, priority, max_attempts, trigger_name, "
            "trigger_position) SELECT $1, $2, a::jsonb, $3, $4, $5, p FROM "
            "unnest($6::text[], $7::bigint[]) AS u(a, p) ORDER BY p ON "
            "CONFLICT (trigger_name, trigger_position) WHERE trigger_name IS "
            "NOT NULL DO NOTHING RETURNING 1), n AS (SELECT count(*) AS c "
            "FROM ins) SELECT c, (SELECT pg_notify($8, $1) WHERE c > 0) FROM "
            "n",
        row[0][1].as<std::string>(), row[0][2].as<std::string>(),
        row[0][3].as<int>(), row[0][4].as<int>(), trigger, args.str(),
        pos.str(), m.channel);
      out.jobs = r[0][0].as<std::size_t>();
    }
    out.checkpoint = std::max(checkpoint, upto);
    if (out.checkpoint != checkpoint)
      tx.exec_params("UPDATE " + m.s
                       + ".job_triggers SET position = $2, updated_at = now() "
                         "WHERE name = $1",
                     trigger, static_cast<std::int64_t>(out.checkpoint));
    return out;
  });
}

// -- pg_job_connection
// ----------------------------------------------------------

struct pg_job_connection::impl {
  pg_config cfg;
  std::string complete_sql;
  std::unique_ptr<pqxx::connection> conn;
};

pg_job_connection::pg_job_connection(pg_config cfg) : impl_(new impl) {
  impl_->complete_sql = "UPDATE " + pg::quoted(cfg.schema)
                        + ".jobs SET state = 'completed', finalized_at = "
                          "now(), lease = NULL, lease_expires_at = NULL "
                          "WHERE id = $1 AND state = 'running' AND lease = $2";
  impl_->cfg = std::move(cfg);
}

pg_job_connection::~pg_job_connection() = default;

pg_job_connection::outcome
pg_job_connection::run(std::int64_t id, std::int64_t lease,
                       const std::function<bool(pqxx::work&)>& work) {
  auto& m = *impl_;
  try {
    return pg::guarded([&] {
      if (!m.conn || !m.conn->is_open())
        m.conn = std::make_unique<pqxx::connection>(m.cfg.dsn);
      pqxx::work tx{*m.conn};
      if (!work(tx))
        return outcome::rolled_back;
      if (tx.exec_params(m.complete_sql, id, lease).affected_rows() != 1)
        return outcome::lease_lost;
      tx.commit();
      return outcome::committed;
    });
  } catch (const store_error& e) {
    if (e.code() == errc::unavailable)
      m.conn.reset();
    throw;
  }
}

std::uint64_t pg_jobs::reconnects() const noexcept {
  return impl_->pool->reconnects();
}

} // namespace dcbd
