#include "store/pg_lease.hpp"

#include "store/pg_internal.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <random>

namespace dcbd {

namespace {

using clock = std::chrono::steady_clock;

std::int64_t ns_of(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           t.time_since_epoch())
    .count();
}

std::int64_t random_writer() {
  std::random_device rd;
  std::mt19937_64 rng{(std::uint64_t{rd()} << 32) ^ rd()};
  // Positive and never 0 (0 is every writer without a lease).
  return static_cast<std::int64_t>(rng() >> 2) + 1;
}

} // namespace

struct read_lease::connection {
  std::unique_ptr<pqxx::connection> conn;
  std::string take;
  std::string renew;
  std::string give_back;
};

read_lease::read_lease(read_lease_config cfg)
  : cfg_(std::move(cfg))
  , writer_(random_writer())
  , conn_(std::make_unique<connection>()) {
  auto s = pg::quoted(cfg_.schema);
  auto until = "clock_timestamp() + $2::bigint * interval '1 millisecond'";
  conn_->take = "UPDATE " + s
                + ".head SET lease_owner = $1, lease_until = " + until
                + " WHERE (lease_owner IS NULL OR lease_owner = $1 OR "
                  "lease_until < clock_timestamp()) AND (writer IS NULL OR "
                  "writer = $1 OR written_at < clock_timestamp() - "
                  "$3::bigint * interval '1 millisecond') RETURNING position";
  conn_->renew = "UPDATE " + s + ".head SET lease_until = " + until
                 + " WHERE lease_owner = $1 RETURNING position";
  conn_->give_back = "UPDATE " + s
                     + ".head SET lease_owner = NULL, lease_until = NULL "
                       "WHERE lease_owner = $1";
  thread_ = std::thread([this] {
    run();
  });
}

read_lease::~read_lease() {
  until_ns_.store(0);
  {
    std::lock_guard lock{mutex_};
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::optional<std::uint64_t> read_lease::index() const noexcept {
  auto until = until_ns_.load(std::memory_order_acquire);
  if (until == 0 || ns_of(clock::now()) >= until)
    return std::nullopt;
  return std::max(base_.load(std::memory_order_relaxed),
                  committed_.load(std::memory_order_relaxed));
}

void read_lease::committed(std::uint64_t position) noexcept {
  auto cur = committed_.load(std::memory_order_relaxed);
  while (cur < position
         && !committed_.compare_exchange_weak(cur, position,
                                              std::memory_order_relaxed))
    ;
}

read_lease_stats read_lease::stats() const {
  read_lease_stats s;
  s.acquisitions = acquisitions_.load();
  s.losses = losses_.load();
  s.failures = failures_.load();
  s.held = index().has_value();
  return s;
}

bool read_lease::attempt(bool held) {
  auto sent = clock::now();
  try {
    if (!conn_->conn) {
      conn_->conn = std::make_unique<pqxx::connection>(cfg_.dsn);
      // A statement that waits longer than a term (on the head lock, or a
      // server that hangs) has missed its renewal anyway.
      pqxx::nontransaction tx{*conn_->conn};
      tx.exec("SET statement_timeout = "
              + std::to_string(std::max<long>(cfg_.term.count(), 1)));
    }
    pqxx::nontransaction tx{*conn_->conn};
    auto r = held ? tx.exec_params(conn_->renew, writer_,
                                   static_cast<long>(cfg_.term.count()))
                  : tx.exec_params(conn_->take, writer_,
                                   static_cast<long>(cfg_.term.count()),
                                   static_cast<long>(cfg_.quiet.count()));
    if (r.empty()) {
      if (held)
        ++losses_;
      until_ns_.store(0, std::memory_order_release);
      return false;
    }
    if (!held) {
      base_.store(r[0][0].as<std::uint64_t>(), std::memory_order_relaxed);
      ++acquisitions_;
    }
    // The database set `lease_until` a term after a moment later than
    // `sent`; trust half of that.
    until_ns_.store(ns_of(sent + cfg_.term / 2), std::memory_order_release);
    return true;
  } catch (const std::exception&) {
    // Keep trusting what the last statement that succeeded allowed (it
    // lapses by itself); reconnect next time.
    ++failures_;
    conn_->conn.reset();
    return held;
  }
}

void read_lease::release() {
  until_ns_.store(0, std::memory_order_release);
  try {
    if (conn_->conn) {
      pqxx::nontransaction tx{*conn_->conn};
      tx.exec_params(conn_->give_back, writer_);
    }
  } catch (const std::exception&) {
    // It expires by itself.
  }
}

void read_lease::run() {
  auto renew_every = std::max(cfg_.term / 10, std::chrono::milliseconds{1});
  auto try_every = std::max(renew_every, cfg_.quiet / 10);
  bool held = false;
  std::unique_lock lock{mutex_};
  while (!stopping_) {
    lock.unlock();
    held = attempt(held);
    lock.lock();
    cv_.wait_for(lock, held ? renew_every : try_every, [this] {
      return stopping_;
    });
  }
  lock.unlock();
  if (held)
    release();
}

} // namespace dcbd
