// The PostgreSQL event store: group appends in one statement (the arrays
// come from store/pg_group), in-doubt resolution, and reads and streams by
// keyset pagination (store/pg_read) over a connection pool (store/pg_pool).
#include "store/pg_store.hpp"

#include "store/pg_group.hpp"
#include "store/pg_head.hpp"
#include "store/pg_internal.hpp"
#include "store/pg_jobs.hpp"
#include "store/pg_lease.hpp"
#include "store/pg_pool.hpp"
#include "store/pg_read.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <limits>
#include <random>
#include <string_view>
#include <thread>

namespace dcbd {

namespace {

// The SQL function takes one bytea per payload kind; keep each well below
// PostgreSQL's 1 GB value limit by splitting very large groups.
constexpr std::size_t max_group_payload = std::size_t{256} << 20;

// The events' recorded_at (the transaction's start, the column's default)
// in microseconds, as reads return it: every statement of a group returns
// it last, so the cache holds exactly what a read would.
const std::string commit_time = "(extract(epoch FROM now()) * 1000000)::bigint";

// A group without conditions needs no check, so it is one plain statement
// instead of a function call: the UPDATE takes the head lock (waiting for
// the current holder and then reading its committed head) and reserves the
// positions; the INSERT fills them; the outcome row and the notification
// commit with them. Same invariants as `append_group`, less overhead,
// and the same read lease rule (store/pg_lease.hpp): the writer ($14)
// clears another writer's lease and `w` waits it out before the commit
// (after the UPDATE, no owner and a future `lease_until` mean exactly that);
// `written_at` is then when the wait ends.
std::string unconditional_sql(const std::string& schema) {
  auto s = pg::quoted(schema);
  return "WITH h AS (UPDATE " + s
         + ".head SET position = position + "
           "cardinality($3::text[]), writer = $14::bigint, "
           "written_at = greatest(clock_timestamp(), CASE WHEN lease_owner "
           "<> $14::bigint THEN lease_until END), lease_owner = CASE WHEN "
           "lease_owner = $14::bigint THEN lease_owner END "
           "RETURNING position - cardinality($3::text[]) AS base, "
           "lease_owner, lease_until), "
           "w AS (SELECT pg_sleep(extract(epoch FROM h.lease_until - "
           "clock_timestamp())) FROM h WHERE h.lease_owner IS NULL AND "
           "h.lease_until > clock_timestamp()), "
           "ins AS (INSERT INTO "
         + s
         + ".events (position, type, tags, data, metadata) "
           "SELECT h.base + e.ord, e.type, "
           "($6::text[])[e.toff : e.toff + e.tcnt - 1], "
           "substring($9::bytea FROM e.doff FOR e.dlen), "
           "substring($12::bytea FROM e.moff FOR e.mlen) "
           "FROM h, unnest($3::text[], $4::int[], $5::int[], $7::int[], "
           "$8::int[], $10::int[], $11::int[]) WITH ORDINALITY "
           "AS e(type, toff, tcnt, doff, dlen, moff, mlen, ord)), "
           "res AS (SELECT array_agg(h.base + r.last ORDER BY r.k) AS results "
           "FROM h, unnest($2::bigint[]) WITH ORDINALITY AS r(last, k)), "
           "o AS (INSERT INTO "
         + s
         + ".append_outcomes (token, results) SELECT $1::bigint, results "
           "FROM res), "
           "prune AS (DELETE FROM "
         + s
         + ".append_outcomes WHERE $1::bigint % 1024 = 0 AND token < "
           "$1::bigint - (600000000::bigint << 12)) "
           "SELECT res.results, pg_notify($13::text, (h.base + "
           "cardinality($3::text[]))::text), (SELECT count(*) FROM w), "
         + commit_time + " FROM res, h";
}

// The jobs of a group, as CTEs to add to its statement: `jobs` inserts
// those of the accepted requests (`accepted`, a condition on j.req, read
// from `from`), in group order; a job whose unique key a live job holds
// (already, or an earlier job of the same statement) is skipped.
// `job_notify` wakes the workers of each queue that got a job; a SELECT
// CTE runs only when the statement reads it, so the caller must. The
// parameters are the job arrays of `group_arrays` from $`p` on: queue,
// kind, args, priority, run_at, delay, max_attempts, unique_key, then the
// request (only if `accepted` reads it) and the channel.
std::string jobs_ctes(const std::string& s, int p, const std::string& from,
                      const std::string& accepted, bool with_req) {
  std::string arrays;
  for (const char* type : {"text", "text", "text", "smallint", "bigint",
                           "bigint", "smallint", "text", "int"}) {
    if (std::string_view{type} == "int" && !with_req)
      break;
    if (!arrays.empty())
      arrays += ", ";
    arrays += "$" + std::to_string(p++) + "::" + type + "[]";
  }
  auto channel = "$" + std::to_string(p);
  return "jobs AS (INSERT INTO " + s
         + ".jobs (queue, kind, args, priority, scheduled_at, max_attempts, "
           "unique_key, state) "
           "SELECT j.queue, j.kind, j.args::jsonb, j.priority, t.at, "
           "j.max_attempts, j.unique_key, "
           "CASE WHEN t.at > now() THEN 'scheduled' ELSE 'available' END "
           "FROM "
         + from + ", unnest(" + arrays
         + ") WITH ORDINALITY AS j(queue, kind, args, priority, run_at, "
           "delay, max_attempts, unique_key, "
         + (with_req ? "req, " : "")
         + "ord), "
           "LATERAL (SELECT "
         + pg::job_start_sql("j.run_at", "j.delay")
         + " AS at) t "
           "WHERE "
         + accepted
         + " ORDER BY j.ord "
           "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL "
           "AND state NOT IN ('completed', 'cancelled', 'discarded') "
           "DO NOTHING RETURNING queue), "
           "job_notify AS (SELECT count(pg_notify("
         + channel
         + "::text, q.queue)) AS n FROM (SELECT DISTINCT queue FROM jobs) q) ";
}

// `unconditional_sql` that also inserts the group's jobs (every request of
// an unconditional group is accepted). They come after the head lock (the
// INSERT reads `h`), as in every append, so two groups never wait on each
// other's unique keys in opposite orders.
std::string unconditional_jobs_sql(const std::string& schema) {
  auto sql = unconditional_sql(schema);
  auto final_select = sql.rfind("SELECT res.results");
  return sql.substr(0, final_select) + ", "
         + jobs_ctes(pg::quoted(schema), 15, "h", "true", false)
         + sql.substr(final_select) + ", job_notify";
}

// The `append_group` call that also inserts the jobs of the requests it
// accepted (result > 0). MATERIALIZED runs the function once, before the
// INSERT reads its results.
std::string group_jobs_sql(const std::string& schema) {
  auto s = pg::quoted(schema);
  return "WITH r AS MATERIALIZED (SELECT " + s
         + ".append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
           "$13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, "
           "$26, $27) AS res), "
         + jobs_ctes(s, 28, "r", "r.res[j.req] > 0", true) + "SELECT r.res, "
         + commit_time + " FROM r, job_notify";
}

// A group's outcome token: microseconds since 2024 in the high bits (so
// outcome rows arrive in key order) and 12 random bits. Two groups that draw
// the same token are told apart by the primary key: the second statement
// fails as a whole and is retried with a new token.
std::int64_t group_token() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  constexpr auto epoch_2024 = std::int64_t{1'704'067'200'000'000};
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count();
  return ((us - epoch_2024) << 12) | static_cast<std::int64_t>(rng() & 0xFFF);
}

} // namespace

// -- pg_event_store ----------------------------------------------------------

pg_event_store::pg_event_store(pg_config cfg)
  : event_store(cfg.limits)
  , cfg_(std::move(cfg)) {
  install_schema(cfg_);
  auto s = pg::quoted(cfg_.schema);
  sql_.append_unconditional = unconditional_sql(cfg_.schema);
  sql_.append_group = "SELECT " + s
                      + ".append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                        "$10, $11, $12, $13, $14, $15, $16, $17, $18, $19, "
                        "$20, $21, $22, $23, $24, $25, $26, $27), "
                      + commit_time;
  sql_.append_unconditional_jobs = unconditional_jobs_sql(cfg_.schema);
  sql_.append_group_jobs = group_jobs_sql(cfg_.schema);
  sql_.head = pg_head_sql(cfg_.schema);
  sql_.channel = notify_channel(cfg_.schema);
  sql_.job_channel = job_channel(cfg_.schema);
  pool_ = std::make_unique<pg_pool>(cfg_);
}

pg_event_store::~pg_event_store() = default;

namespace {

// What a request whose condition failed gets.
append_result condition_failed(const append_condition& c) {
  return append_result{errc::append_condition_failed,
                       0,
                       "an event matching the append condition exists after "
                       "position "
                         + std::to_string(c.after.value_or(0)),
                       {}};
}

} // namespace

std::vector<append_result>
pg_event_store::append_validated(const std::vector<validated_append>& group) {
  return append_prechecked(group, {});
}

std::vector<append_result> pg_event_store::append_prechecked(
  const std::vector<validated_append>& group,
  std::span<const std::uint64_t> checked_through) {
  std::vector<append_result> results(group.size());
  // Requests known to fail append nothing, so leaving them out changes
  // nothing for the others.
  std::vector<std::size_t> live;
  live.reserve(group.size());
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (i < checked_through.size() && checked_through[i] == condition_fails
        && group[i].condition())
      results[i] = condition_failed(*group[i].condition());
    else
      live.push_back(i);
  }
  // Normally one transaction; very large groups are split by payload size,
  // which keeps the serial-order semantics (later parts see earlier ones in
  // the database).
  std::size_t begin = 0;
  while (begin < live.size()) {
    std::size_t end = begin, bytes = 0;
    do {
      bytes += group[live[end]].payload_bytes();
      ++end;
    } while (end < live.size()
             && bytes + group[live[end]].payload_bytes() <= max_group_payload);
    std::vector<std::size_t> part(
      live.begin() + static_cast<std::ptrdiff_t>(begin),
      live.begin() + static_cast<std::ptrdiff_t>(end));
    commit_part(group, part, checked_through, results);
    begin = end;
  }
  return results;
}

// Sends the flattened group `a` on `l` in one statement; returns the last
// position per request (0: condition failed). `sent` is set before anything
// goes on the wire, `backend` to the connection's server process.
namespace {

// SQL text of the store, built once.
struct group_statements {
  const std::string& unconditional;
  const std::string& conditional;
  const std::string& unconditional_jobs;
  const std::string& conditional_jobs;
  const std::string& channel;
  const std::string& job_channel;
};

// `run_group` for a group with jobs: the statements that also insert them.
// Kept apart so that groups without jobs run the statements they always
// ran.
// What a group's statement returns: the last position per request (0: the
// condition failed) and the commit time in microseconds.
struct group_reply {
  std::vector<std::int64_t> last;
  std::int64_t at_us = 0;
};

group_reply reply_of(const pqxx::row& row) {
  return {pg::parse_int_array(row[0].c_str()),
          row[row.size() - 1].as<std::int64_t>()};
}

group_reply run_group_with_jobs(pg_pool::lease& l, pqxx::nontransaction& tx,
                                const group_statements& sql,
                                std::int64_t writer, const pg::group_arrays& a,
                                std::int64_t token,
                                const pqxx::binarystring& data,
                                const pqxx::binarystring& meta) {
  if (!a.conditional) {
    auto row = tx.exec_prepared1(
      l.statement("append_unconditional_jobs", sql.unconditional_jobs), token,
      a.req_last_event.str(), a.ev_type.str(), a.ev_tag_off.str(),
      a.ev_tag_cnt.str(), a.tags.str(), a.ev_data_off.str(),
      a.ev_data_len.str(), data, a.ev_meta_off.str(), a.ev_meta_len.str(), meta,
      sql.channel, writer, a.job_queue.str(), a.job_kind.str(),
      a.job_args.str(), a.job_priority.str(), a.job_run_at.str(),
      a.job_delay.str(), a.job_max_attempts.str(), a.job_unique_key.str(),
      sql.job_channel);
    return reply_of(row);
  }
  const auto& stmt = l.statement("append_group_jobs", sql.conditional_jobs);
  auto row = tx.exec_prepared1(
    stmt, token, a.req_kind.str(), a.req_after.str(), a.req_nev.str(),
    a.ev_req.str(), a.ev_idx.str(), a.ev_type.str(), a.ev_tag_off.str(),
    a.ev_tag_cnt.str(), a.tags.str(), a.ev_data_off.str(), a.ev_data_len.str(),
    data, a.ev_meta_off.str(), a.ev_meta_len.str(), meta, a.it_req.str(),
    a.it_type_off.str(), a.it_type_cnt.str(), a.it_types.str(),
    a.it_tag_off.str(), a.it_tag_cnt.str(), a.it_tags.str(), a.dep_req.str(),
    a.dep_on.str(), a.dep_off.str(), writer, a.job_queue.str(),
    a.job_kind.str(), a.job_args.str(), a.job_priority.str(),
    a.job_run_at.str(), a.job_delay.str(), a.job_max_attempts.str(),
    a.job_unique_key.str(), a.job_req.str(), sql.job_channel);
  return reply_of(row);
}

group_reply run_group(pg_pool::lease& l, const group_statements& sql,
                      std::int64_t writer, const pg::group_arrays& a,
                      std::int64_t token, int& backend, bool& sent) {
  backend = l.conn().backendpid();
  pqxx::nontransaction tx{l.conn()};
  pqxx::binarystring data{a.data.data(), a.data.size()};
  pqxx::binarystring meta{a.meta.data(), a.meta.size()};
  sent = true;
  if (a.has_jobs)
    return run_group_with_jobs(l, tx, sql, writer, a, token, data, meta);
  if (!a.conditional) {
    auto row = tx.exec_prepared1(
      l.statement("append_unconditional", sql.unconditional), token,
      a.req_last_event.str(), a.ev_type.str(), a.ev_tag_off.str(),
      a.ev_tag_cnt.str(), a.tags.str(), a.ev_data_off.str(),
      a.ev_data_len.str(), data, a.ev_meta_off.str(), a.ev_meta_len.str(), meta,
      sql.channel, writer);
    return reply_of(row);
  }
  const auto& stmt = l.statement("append_group", sql.conditional);
  auto row = tx.exec_prepared1(
    stmt, token, a.req_kind.str(), a.req_after.str(), a.req_nev.str(),
    a.ev_req.str(), a.ev_idx.str(), a.ev_type.str(), a.ev_tag_off.str(),
    a.ev_tag_cnt.str(), a.tags.str(), a.ev_data_off.str(), a.ev_data_len.str(),
    data, a.ev_meta_off.str(), a.ev_meta_len.str(), meta, a.it_req.str(),
    a.it_type_off.str(), a.it_type_cnt.str(), a.it_types.str(),
    a.it_tag_off.str(), a.it_tag_cnt.str(), a.it_tags.str(), a.dep_req.str(),
    a.dep_on.str(), a.dep_off.str(), writer);
  return reply_of(row);
}

} // namespace

void pg_event_store::commit_part(const std::vector<validated_append>& group,
                                 const std::vector<std::size_t>& part,
                                 std::span<const std::uint64_t> checked_through,
                                 std::vector<append_result>& results) {
  auto a = pg::flatten(group, part, checked_through);
  group_statements sql{sql_.append_unconditional,
                       sql_.append_group,
                       sql_.append_unconditional_jobs,
                       sql_.append_group_jobs,
                       sql_.channel,
                       sql_.job_channel};
  auto writer = cfg_.lease ? cfg_.lease->writer() : std::int64_t{0};
  std::int64_t token = 0;
  int backend = 0;
  bool sent = false;
  group_reply reply;
  auto& last = reply.last;
  try {
    reply = pool_->with_connection([&](pg_pool::lease& l) {
      for (int attempt = 1;; ++attempt) {
        token = group_token();
        try {
          return run_group(l, sql, writer, a, token, backend, sent);
        } catch (const pqxx::unique_violation&) {
          // Only the outcome token can collide (positions are reserved
          // under the lock); the statement failed whole, so retry.
          if (attempt == 3)
            throw;
        }
      }
    });
  } catch (const store_error& e) {
    std::string message = e.what();
    if (e.code() == errc::unavailable && sent) {
      if (!resolve_in_doubt(token, backend, last))
        message += " (the connection broke after the group was sent, and "
                   "whether it committed could not be established)";
    }
    if (last.empty()) {
      for (auto i : part) {
        results[i].code = e.code();
        results[i].message = message;
      }
      return;
    }
  }
  if (last.size() != part.size())
    throw store_error{errc::internal,
                      "append_group returned " + std::to_string(last.size())
                        + " results for " + std::to_string(part.size())};
  if (cfg_.lease) {
    auto top = *std::max_element(last.begin(), last.end());
    if (top > 0)
      cfg_.lease->committed(static_cast<std::uint64_t>(top));
  }
  for (std::size_t k = 0; k < part.size(); ++k) {
    auto& res = results[part[k]];
    if (last[k] > 0) {
      res.last_position = static_cast<std::uint64_t>(last[k]);
      if (reply.at_us != 0)
        res.recorded_at = std::chrono::system_clock::time_point{
          std::chrono::microseconds{reply.at_us}};
    } else {
      res = condition_failed(
        group[part[k]].condition().value_or(append_condition{}));
    }
  }
}

// The connection broke after the group was sent: the commit may or may not
// have happened. Make sure the old backend is gone (so it cannot commit
// later), then look for the group's outcome row, retrying with backoff for
// up to `connect_timeout`. Returns whether the outcome is known; if it is,
// `committed` holds the group's results, or stays empty if it did not
// commit (and now never will).
bool pg_event_store::resolve_in_doubt(std::int64_t token, int backend,
                                      std::vector<std::int64_t>& committed) {
  auto deadline = std::chrono::steady_clock::now() + cfg_.connect_timeout;
  for (auto backoff = std::chrono::milliseconds{10};;
       backoff = std::min(backoff * 2, std::chrono::milliseconds{500})) {
    try {
      auto known = pool_->with_connection([&](pg_pool::lease& l) {
        pqxx::nontransaction tx{l.conn()};
        tx.exec_params("SELECT pg_terminate_backend($1)", backend);
        auto gone = tx.exec_params1(
          "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1", backend);
        if (!gone[0].as<bool>())
          return false; // still exiting: look again after the backoff
        auto r = tx.exec_params("SELECT results FROM " + pg::quoted(cfg_.schema)
                                  + ".append_outcomes WHERE token = $1",
                                token);
        committed.clear();
        if (!r.empty())
          committed = pg::parse_int_array(r[0][0].c_str());
        return true;
      });
      if (known)
        return true;
    } catch (const store_error&) {
      // Unreachable right now; try again until the deadline.
    }
    if (std::chrono::steady_clock::now() + backoff > deadline)
      return false;
    std::this_thread::sleep_for(backoff);
  }
}

read_result pg_event_store::read(const query& q, const read_options& options) {
  return pg::read(*pool_, cfg_.schema, validate_read(q, options, cfg_.limits),
                  options);
}

std::unique_ptr<event_stream>
pg_event_store::stream(const query& q, const read_options& options,
                       const stream_options& chunking) {
  return pg::open_stream(*pool_, cfg_.schema,
                         validate_read(q, options, cfg_.limits), options,
                         chunking);
}

std::uint64_t pg_event_store::head() {
  return pool_->with_connection([&](pg_pool::lease& l) {
    pqxx::nontransaction tx{l.conn()};
    auto row = tx.exec_prepared1(l.statement("head", sql_.head));
    return row[0].as<std::uint64_t>();
  });
}

std::uint64_t pg_event_store::reconnects() const noexcept {
  return pool_->reconnects();
}

} // namespace dcbd
