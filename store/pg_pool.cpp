#include "store/pg_pool.hpp"

#include <pqxx/nontransaction>
#include <pqxx/prepared_statement>

#include <algorithm>
#include <chrono>
#include <thread>

namespace dcbd {

pg_pool::lease::lease(pg_pool& owner, std::unique_ptr<slot> s)
  : owner_(owner)
  , slot_(std::move(s)) {
  // nop
}

pg_pool::lease::~lease() {
  owner_.give_back(std::move(slot_), broken_);
}

const std::string& pg_pool::lease::statement(const std::string& name,
                                             const std::string& sql) {
  auto [i, added] = slot_->prepared.insert(name);
  if (added)
    slot_->conn->prepare(name, sql);
  return *i; // set nodes are stable
}

pg_pool::pg_pool(pg_config cfg) : cfg_(std::move(cfg)) {
  cfg_.pool_size = std::max<std::size_t>(cfg_.pool_size, 1);
}

pqxx::result pg_pool::query(const std::string& sql,
                            const std::vector<std::string>& params) {
  return with_connection([&](lease& l) {
    pqxx::nontransaction tx{l.conn()};
    return tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
  });
}

std::unique_ptr<pg_pool::slot> pg_pool::acquire() {
  {
    std::unique_lock guard{mtx_};
    cv_.wait(guard, [this] {
      return !idle_.empty() || open_ < cfg_.pool_size;
    });
    if (!idle_.empty()) {
      auto s = std::move(idle_.back());
      idle_.pop_back();
      return s;
    }
    ++open_;
  }
  try {
    return connect();
  } catch (...) {
    std::lock_guard guard{mtx_};
    --open_;
    cv_.notify_one();
    throw;
  }
}

void pg_pool::give_back(std::unique_ptr<slot> s, bool broken) {
  std::lock_guard guard{mtx_};
  if (broken || !s->conn->is_open())
    --open_;
  else
    idle_.push_back(std::move(s));
  cv_.notify_one();
}

std::uint64_t pg_pool::reconnects() const noexcept {
  auto n = opened_.load();
  return n > 0 ? n - 1 : 0;
}

// Opens a connection, retrying with exponential backoff until
// `connect_timeout` has passed.
std::unique_ptr<pg_pool::slot> pg_pool::connect() {
  auto deadline = std::chrono::steady_clock::now() + cfg_.connect_timeout;
  auto backoff = std::chrono::milliseconds{10};
  for (;;) {
    try {
      auto s = std::make_unique<slot>();
      s->conn = std::make_unique<pqxx::connection>(cfg_.dsn);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      // A lost connection is replaced by the pool, never silently re-opened
      // by libpqxx under a statement.
      s->conn->inhibit_reactivation(true);
#pragma GCC diagnostic pop
      // Store statements are short; JIT compilation only adds latency.
      pqxx::nontransaction{*s->conn}.exec("SET jit = off");
      opened_.fetch_add(1);
      return s;
    } catch (const pqxx::broken_connection& e) {
      if (std::chrono::steady_clock::now() + backoff > deadline)
        throw store_error{errc::unavailable,
                          std::string{"cannot connect to PostgreSQL: "}
                            + e.what()};
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds{1000});
    }
  }
}

} // namespace dcbd
