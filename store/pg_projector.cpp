#include "store/pg_projector.hpp"

#include "store/error.hpp"
#include "store/pg_internal.hpp"
#include "store/pg_pool.hpp"
#include "store/pg_read.hpp"
#include "store/validation.hpp"

#include <pqxx/nontransaction>
#include <pqxx/pqxx>

#include <algorithm>
#include <cctype>
#include <utility>

namespace dcbd {

namespace {

// The lock session's settings (API.md §6, research/cluster.md §7): a frozen
// or cut-off holder loses its session, and with it its locks, within about
// three seconds; a statement never runs longer than two.
constexpr const char* lock_session_options
  = "-c idle_session_timeout=3000 -c idle_in_transaction_session_timeout=3000 "
    "-c client_connection_check_interval=1000 -c statement_timeout=2000 "
    "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 "
    "-c tcp_keepalives_count=2";

// An instance's connection: a frozen or cut-off owner's open batch must
// not hold the projector's row (and with it every takeover) for longer than
// a few seconds, so the server ends a transaction idle for 3 s and notices
// a dead client within about 3 s (a takeover after SIGSTOP of the owner
// waits for that row: with 5 s it took over 4.5 s in `./dev bench
// cluster`). Handlers must not pause for 3 s inside
// their transaction.
constexpr const char* instance_options
  = "-c idle_in_transaction_session_timeout=3000 "
    "-c client_connection_check_interval=1000 "
    "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 "
    "-c tcp_keepalives_count=2";

bool is_uri(const std::string& dsn) {
  return dsn.rfind("postgresql://", 0) == 0 || dsn.rfind("postgres://", 0) == 0;
}

std::string percent_encoded(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// `dsn` with `params` added (later keys win in libpq's key/value form).
std::string
with_params(const std::string& dsn,
            const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out = dsn;
  if (is_uri(dsn)) {
    char sep = dsn.find('?') == std::string::npos ? '?' : '&';
    for (auto& [k, v] : params) {
      out += sep;
      out += k + "=" + percent_encoded(v);
      sep = '&';
    }
    return out;
  }
  for (auto& [k, v] : params) {
    out += ' ';
    out += k + "='";
    for (char c : v) {
      if (c == '\'' || c == '\\')
        out += '\\';
      out += c;
    }
    out += '\'';
  }
  return out;
}

void set_up(pqxx::connection& conn) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // A lost connection is re-opened by us, never silently by libpqxx under
  // a statement (which would lose the session's locks unnoticed).
  conn.inhibit_reactivation(true);
#pragma GCC diagnostic pop
}

std::uint64_t as_u64(const pqxx::field& f) {
  return f.is_null() ? 0 : static_cast<std::uint64_t>(f.as<std::int64_t>());
}

projector_row row_of(const pqxx::row& r) {
  projector_row p;
  p.name = r["name"].as<std::string>();
  p.version = r["version"].as<int>();
  p.position = as_u64(r["position"]);
  p.epoch = as_u64(r["epoch"]);
  p.owner = r["owner"].as<std::string>();
  p.paused = r["paused"].as<bool>();
  p.rebuild = r["rebuild"].as<bool>();
  p.failed = r["failed"].as<std::string>();
  return p;
}

constexpr const char* row_columns
  = "name, version, position, epoch, owner, paused, rebuild, failed";

// `s` as storable text (handlers' messages may quote raw input).
std::string storable(std::string_view s) {
  return storable_text(s, 2000);
}

std::string error_text(const std::exception& e) {
  std::string s = storable(e.what());
  // libpq messages end with a newline (and may carry a second line).
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

} // namespace

std::int64_t projector_lock_key(const std::string& schema,
                                const std::string& name) {
  // FNV-1a, 64 bits: stable across processes and versions (the key is
  // shared by every node on the database).
  std::uint64_t h = 14695981039346656037ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix("dcbd.projector/");
  mix(schema);
  mix("/");
  mix(name);
  return static_cast<std::int64_t>(h);
}

// -- admin --------------------------------------------------------------------

struct pg_projector_admin::impl {
  explicit impl(pg_config c)
    : schema(pg::quoted(c.schema))
    , pool([&] {
      c.pool_size = 2;
      return c;
    }()) {
    // nop
  }

  // Management runs on the projector host's thread, which also keeps the
  // lock session alive: never wait long for a row an instance holds (its
  // batch) or for a slow server.
  template <class F>
  auto with(F&& f) {
    return pool.with_brief_transaction(std::forward<F>(f));
  }

  std::string schema;
  pg_pool pool;
};

pg_projector_admin::pg_projector_admin(pg_config cfg)
  : impl_(std::make_unique<impl>(std::move(cfg))) {
  // nop
}

pg_projector_admin::~pg_projector_admin() = default;

void pg_projector_admin::ensure(const std::string& name, int version) {
  impl_->with([&](pqxx::work& tx) {
    tx.exec_params("INSERT INTO " + impl_->schema
                     + ".projectors (name, version) VALUES ($1, $2) "
                       "ON CONFLICT (name) DO NOTHING",
                   name, version);
    return 0;
  });
}

std::vector<projector_row>
pg_projector_admin::rows(const std::vector<std::string>& names) {
  return impl_->with([&](pqxx::work& tx) {
    auto& s = impl_->schema;
    std::string q = std::string{"SELECT "} + row_columns
                    + ", (SELECT count(*) FROM " + s
                    + ".projector_dead_letters d WHERE d.projector = "
                      "p.name) AS dead_letters, (SELECT position FROM "
                    + s + ".head) AS head FROM " + s + ".projectors p";
    pqxx::result r;
    if (names.empty())
      r = tx.exec(q + " ORDER BY name");
    else
      r = tx.exec_params(q + " WHERE name = ANY($1::text[]) ORDER BY name",
                         pg::text_array(names));
    std::vector<projector_row> out;
    out.reserve(r.size());
    for (auto row : r) {
      auto p = row_of(row);
      p.dead_letters = as_u64(row["dead_letters"]);
      p.head = as_u64(row["head"]);
      out.push_back(std::move(p));
    }
    // Who holds a lock now: advisory locks keyed by one bigint show up as
    // classid (high 32 bits) and objid (low 32 bits) with objsubid 1.
    auto locks = tx.exec(
      "SELECT ((classid::bigint << 32) | objid::bigint) AS key FROM pg_locks "
      "WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND "
      "database = (SELECT oid FROM pg_database WHERE datname = "
      "current_database())");
    std::vector<std::int64_t> held;
    for (auto l : locks)
      held.push_back(l[0].as<std::int64_t>());
    std::string plain_schema = s.substr(1, s.size() - 2);
    for (auto& p : out) {
      auto key = projector_lock_key(plain_schema, p.name);
      p.locked = std::find(held.begin(), held.end(), key) != held.end();
    }
    return out;
  });
}

namespace {

// Runs `UPDATE projectors SET <set>, updated_at = now() WHERE name = $1`
// with `args` from $2 on; whether the row exists.
template <class... Ts>
bool update_row(pqxx::work& tx, const std::string& schema,
                const std::string& set, const std::string& name, Ts&&... args) {
  return tx.exec_params("UPDATE " + schema + ".projectors SET " + set
                          + ", updated_at = now() WHERE name = $1",
                        name, std::forward<Ts>(args)...)
           .affected_rows()
         > 0;
}

} // namespace

bool pg_projector_admin::set_paused(const std::string& name, bool paused) {
  return impl_->with([&](pqxx::work& tx) {
    return update_row(tx, impl_->schema, "paused = $2", name, paused);
  });
}

bool pg_projector_admin::request_rebuild(const std::string& name) {
  return impl_->with([&](pqxx::work& tx) {
    return update_row(tx, impl_->schema, "rebuild = true", name);
  });
}

bool pg_projector_admin::clear_failed(const std::string& name) {
  return impl_->with([&](pqxx::work& tx) {
    return update_row(tx, impl_->schema, "failed = ''", name);
  });
}

std::vector<dead_letter>
pg_projector_admin::dead_letters(const std::string& name, std::size_t limit) {
  return impl_->with([&](pqxx::work& tx) {
    auto r = tx.exec_params(
      "SELECT position, error, attempts, "
      "(extract(epoch FROM at) * 1000000)::bigint FROM "
        + impl_->schema
        + ".projector_dead_letters WHERE projector = $1 ORDER BY position "
          "LIMIT $2",
      name, static_cast<std::int64_t>(limit));
    std::vector<dead_letter> out;
    for (auto row : r) {
      dead_letter d;
      d.position = as_u64(row[0]);
      d.error = row[1].as<std::string>();
      d.attempts = row[2].as<std::uint32_t>();
      d.at = std::chrono::system_clock::time_point{
        std::chrono::microseconds{row[3].as<std::int64_t>()}};
      out.push_back(std::move(d));
    }
    return out;
  });
}

bool pg_projector_admin::has_dead_letter(const std::string& name,
                                         std::uint64_t position) {
  return impl_->with([&](pqxx::work& tx) {
    return !tx.exec_params("SELECT 1 FROM " + impl_->schema
                             + ".projector_dead_letters WHERE projector = $1 "
                               "AND position = $2",
                           name, static_cast<std::int64_t>(position))
              .empty();
  });
}

bool pg_projector_admin::skip(const std::string& name, std::uint64_t position) {
  return impl_->with([&](pqxx::work& tx) {
    return tx.exec_params("DELETE FROM " + impl_->schema
                            + ".projector_dead_letters WHERE projector = $1 "
                              "AND position = $2",
                          name, static_cast<std::int64_t>(position))
             .affected_rows()
           > 0;
  });
}

// -- lock session -------------------------------------------------------------

pg_lock_session::pg_lock_session(pg_config cfg, std::string node)
  : cfg_(std::move(cfg))
  , node_(std::move(node)) {
  pg::check_schema_name(cfg_.schema);
}

pg_lock_session::~pg_lock_session() = default;

void pg_lock_session::open() {
  if (conn_ && conn_->is_open())
    return;
  conn_.reset();
  auto dsn = with_params(cfg_.dsn, {{"connect_timeout", "2"},
                                    {"keepalives", "1"},
                                    {"keepalives_idle", "1"},
                                    {"keepalives_interval", "1"},
                                    {"keepalives_count", "2"},
                                    {"tcp_user_timeout", "3000"},
                                    {"application_name", "dcbd:" + node_},
                                    {"options", lock_session_options}});
  pg::guarded([&] {
    auto c = std::make_unique<pqxx::connection>(dsn);
    set_up(*c);
    conn_ = std::move(c);
    return 0;
  });
}

bool pg_lock_session::is_open() const {
  return conn_ && conn_->is_open();
}

void pg_lock_session::close() {
  conn_.reset();
}

std::vector<std::string>
pg_lock_session::try_lock(const std::vector<std::string>& names) {
  if (!is_open())
    throw store_error{errc::unavailable, "the lock session is closed"};
  std::vector<std::string> keys;
  keys.reserve(names.size());
  for (auto& n : names)
    keys.push_back(std::to_string(projector_lock_key(cfg_.schema, n)));
  return pg::guarded([&] {
    try {
      pqxx::nontransaction tx{*conn_};
      auto r = tx.exec_params(
        "SELECT i - 1 FROM unnest($1::bigint[]) WITH ORDINALITY AS k(key, i) "
        "WHERE pg_try_advisory_lock(k.key) ORDER BY i",
        pg::text_array(keys));
      std::vector<std::string> got;
      for (auto row : r)
        got.push_back(names.at(row[0].as<std::size_t>()));
      return got;
    } catch (...) {
      if (!conn_->is_open())
        conn_.reset();
      throw;
    }
  });
}

void pg_lock_session::unlock(const std::string& name) {
  if (!is_open())
    return;
  pg::guarded([&] {
    try {
      pqxx::nontransaction tx{*conn_};
      tx.exec_params("SELECT pg_advisory_unlock($1)",
                     projector_lock_key(cfg_.schema, name));
    } catch (...) {
      if (!conn_->is_open())
        conn_.reset();
      throw;
    }
    return 0;
  });
}

void pg_lock_session::ping() {
  if (!is_open())
    throw store_error{errc::unavailable, "the lock session is closed"};
  pg::guarded([&] {
    try {
      pqxx::nontransaction tx{*conn_};
      tx.exec("SELECT 1");
    } catch (...) {
      if (!conn_->is_open())
        conn_.reset();
      throw;
    }
    return 0;
  });
}

std::uint64_t pg_lock_session::take_over(const std::string& name) {
  if (!is_open())
    throw store_error{errc::unavailable, "the lock session is closed"};
  return pg::guarded([&] {
    try {
      pqxx::work tx{*conn_};
      // The row is locked while an old owner's batch is open (until the
      // server ends that transaction, see `instance_options`); retried at
      // the next poll rather than holding the lock session.
      tx.exec("SET LOCAL lock_timeout = '500ms'");
      auto r = tx.exec_params("UPDATE " + pg::quoted(cfg_.schema)
                                + ".projectors SET epoch = epoch + 1, owner "
                                  "= $2, updated_at = now() WHERE name = $1 "
                                  "RETURNING epoch",
                              name, node_);
      if (r.empty())
        throw store_error{errc::invalid_argument, "no projector named " + name};
      auto epoch = as_u64(r[0][0]);
      tx.commit();
      return epoch;
    } catch (...) {
      if (conn_ && !conn_->is_open())
        conn_.reset();
      throw;
    }
  });
}

int pg_lock_session::backend_pid() const {
  return is_open() ? conn_->backendpid() : 0;
}

// -- instance session ---------------------------------------------------------

pg_projector_session::pg_projector_session(pg_config cfg, std::string name,
                                           std::uint64_t epoch)
  : cfg_(std::move(cfg))
  , name_(std::move(name))
  , epoch_(epoch)
  , schema_(pg::quoted(cfg_.schema)) {
  // nop
}

pg_projector_session::~pg_projector_session() = default;

pqxx::connection& pg_projector_session::conn() {
  if (!conn_ || !conn_->is_open()) {
    conn_.reset();
    // A server that does not answer must not hold the instance for the
    // minutes of a TCP connect timeout.
    auto c = std::make_unique<pqxx::connection>(
      with_params(cfg_.dsn, {{"connect_timeout", "5"},
                             {"keepalives", "1"},
                             {"keepalives_idle", "1"},
                             {"keepalives_interval", "1"},
                             {"keepalives_count", "2"},
                             {"tcp_user_timeout", "3000"},
                             {"options", instance_options}}));
    set_up(*c);
    pqxx::nontransaction{*c}.exec("SET jit = off");
    conn_ = std::move(c);
  }
  return *conn_;
}

// Runs `f(tx)` in a transaction that first takes the row's lock under this
// epoch (`set` adds assignments to that UPDATE). The handler's work thus
// runs while the row is locked: a takeover waits for it, and a stale
// instance finds the epoch moved and writes nothing.
template <class F>
projector_result pg_projector_session::run(F&& f) {
  try {
    auto& c = conn();
    pqxx::work tx{c};
    auto outcome = f(tx);
    if (outcome == projector_outcome::ok)
      tx.commit();
    return {outcome, {}};
  } catch (const pqxx::broken_connection& e) {
    conn_.reset();
    return {projector_outcome::unavailable, error_text(e)};
  } catch (const pqxx::in_doubt_error& e) {
    conn_.reset();
    return {projector_outcome::unavailable, error_text(e)};
  } catch (const pqxx::sql_error& e) {
    if (pg::is_unavailable(e) || !conn_ || !conn_->is_open()) {
      conn_.reset();
      return {projector_outcome::unavailable, error_text(e)};
    }
    return {projector_outcome::failed, error_text(e)};
  } catch (const std::exception& e) {
    if (!conn_ || !conn_->is_open()) {
      conn_.reset();
      return {projector_outcome::unavailable, error_text(e)};
    }
    return {projector_outcome::failed, error_text(e)};
  } catch (...) {
    if (!conn_ || !conn_->is_open()) {
      conn_.reset();
      return {projector_outcome::unavailable, "connection lost"};
    }
    return {projector_outcome::failed, "unknown exception"};
  }
}

namespace {

// Takes the row under `epoch`, applying `set` (", position = ..." etc.);
// false when the epoch moved on.
bool fence(pqxx::work& tx, const std::string& schema, const std::string& name,
           std::uint64_t epoch, const std::string& set = {},
           std::optional<std::uint64_t> position = std::nullopt) {
  auto sql = "UPDATE " + schema + ".projectors SET updated_at = now()" + set
             + " WHERE name = $1 AND epoch = $2";
  pqxx::result r;
  if (position)
    r = tx.exec_params(sql, name, static_cast<std::int64_t>(epoch),
                       static_cast<std::int64_t>(*position));
  else
    r = tx.exec_params(sql, name, static_cast<std::int64_t>(epoch));
  return r.affected_rows() == 1;
}

// `fence`, moving the checkpoint forward to `checkpoint` when set.
bool fence_at(pqxx::work& tx, const std::string& schema,
              const std::string& name, std::uint64_t epoch,
              std::optional<std::uint64_t> checkpoint) {
  return checkpoint ? fence(tx, schema, name, epoch,
                            ", position = greatest(position, $3)", checkpoint)
                    : fence(tx, schema, name, epoch);
}

} // namespace

pg_projector_session::loaded pg_projector_session::load() {
  loaded out;
  out.result = run([&](pqxx::work& tx) {
    auto r = tx.exec_params(std::string{"SELECT "} + row_columns + " FROM "
                              + schema_ + ".projectors WHERE name = $1",
                            name_);
    if (r.empty())
      return projector_outcome::fenced;
    out.row = row_of(r[0]);
    if (out.row.epoch != epoch_)
      return projector_outcome::fenced;
    return projector_outcome::ok;
  });
  return out;
}

projector_result
pg_projector_session::apply(const projector_handler& fn,
                            const event_batch& events,
                            const projector_context& ctx,
                            std::optional<std::uint64_t> checkpoint) {
  return run([&](pqxx::work& tx) {
    if (!fence_at(tx, schema_, name_, epoch_, checkpoint))
      return projector_outcome::fenced;
    fn(tx, events, ctx);
    return projector_outcome::ok;
  });
}

projector_result pg_projector_session::checkpoint(std::uint64_t position) {
  return run([&](pqxx::work& tx) {
    return fence_at(tx, schema_, name_, epoch_, position)
             ? projector_outcome::ok
             : projector_outcome::fenced;
  });
}

projector_result
pg_projector_session::park(std::uint64_t position, const std::string& error,
                           std::uint32_t attempts,
                           std::optional<std::uint64_t> checkpoint) {
  return run([&](pqxx::work& tx) {
    if (!fence_at(tx, schema_, name_, epoch_, checkpoint))
      return projector_outcome::fenced;
    tx.exec_params("INSERT INTO " + schema_
                     + ".projector_dead_letters (projector, position, error, "
                       "attempts) VALUES ($1, $2, $3, $4) ON CONFLICT "
                       "(projector, position) DO UPDATE SET error = "
                       "excluded.error, attempts = "
                       "projector_dead_letters.attempts + excluded.attempts, "
                       "at = now()",
                   name_, static_cast<std::int64_t>(position), storable(error),
                   static_cast<std::int64_t>(attempts));
    return projector_outcome::ok;
  });
}

projector_result pg_projector_session::prepare(const projector_reset& fn) {
  return run([&](pqxx::work& tx) {
    if (!fence(tx, schema_, name_, epoch_))
      return projector_outcome::fenced;
    if (fn)
      fn(tx);
    return projector_outcome::ok;
  });
}

projector_result pg_projector_session::fail(const std::string& error) {
  return run([&](pqxx::work& tx) {
    auto r = tx.exec_params("UPDATE " + schema_
                              + ".projectors SET failed = $3, updated_at = "
                                "now() WHERE name = $1 AND epoch = $2",
                            name_, static_cast<std::int64_t>(epoch_),
                            error.empty() ? std::string{"failed"}
                                          : storable(error));
    return r.affected_rows() == 1 ? projector_outcome::ok
                                  : projector_outcome::fenced;
  });
}

projector_result pg_projector_session::clear_failed() {
  return run([&](pqxx::work& tx) {
    return fence(tx, schema_, name_, epoch_, ", failed = ''")
             ? projector_outcome::ok
             : projector_outcome::fenced;
  });
}

projector_result pg_projector_session::reset(const projector_reset& on_reset,
                                             int version) {
  return run([&](pqxx::work& tx) {
    if (!fence(tx, schema_, name_, epoch_,
               ", position = 0, failed = '', rebuild = false, version = $3",
               static_cast<std::uint64_t>(version)))
      return projector_outcome::fenced;
    tx.exec_params("DELETE FROM " + schema_
                     + ".projector_dead_letters WHERE projector = $1",
                   name_);
    if (on_reset)
      on_reset(tx);
    return projector_outcome::ok;
  });
}

pg_projector_session::retried
pg_projector_session::retry(const projector_handler& fn,
                            const projector_context& ctx,
                            std::uint64_t position) {
  retried out;
  out.result = run([&](pqxx::work& tx) {
    if (!fence(tx, schema_, name_, epoch_))
      return projector_outcome::fenced;
    auto dl = tx.exec_params("SELECT attempts FROM " + schema_
                               + ".projector_dead_letters WHERE projector = "
                                 "$1 AND position = $2 FOR UPDATE",
                             name_, static_cast<std::int64_t>(position));
    if (dl.empty()) {
      out.missing = true;
      return projector_outcome::failed;
    }
    auto page = pg::make_page(cfg_.schema, query::all(), false, position,
                              position, 1, std::nullopt);
    std::vector<sequenced_event> found;
    pg::collect(tx.exec_params(page.sql,
                               pqxx::prepare::make_dynamic_params(page.params)),
                found);
    if (found.empty()) {
      out.missing = true;
      return projector_outcome::failed;
    }
    std::vector<event_batch::pointer> one{
      std::make_shared<const sequenced_event>(std::move(found.front()))};
    fn(tx, event_batch{one.data(), one.size()}, ctx);
    tx.exec_params("DELETE FROM " + schema_
                     + ".projector_dead_letters WHERE projector = $1 AND "
                       "position = $2",
                   name_, static_cast<std::int64_t>(position));
    return projector_outcome::ok;
  });
  if (out.result.outcome == projector_outcome::failed && !out.missing) {
    auto error = out.result.error;
    auto counted = run([&](pqxx::work& tx) {
      if (!fence(tx, schema_, name_, epoch_))
        return projector_outcome::fenced;
      tx.exec_params("UPDATE " + schema_
                       + ".projector_dead_letters SET attempts = attempts + "
                         "1, error = $3, at = now() WHERE projector = $1 AND "
                         "position = $2",
                     name_, static_cast<std::int64_t>(position), error);
      return projector_outcome::ok;
    });
    if (!counted.ok())
      out.result = counted;
  }
  return out;
}

} // namespace dcbd
