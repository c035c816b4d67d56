// A pool of PostgreSQL connections shared by the threads of one store (or
// of any other component that talks SQL: projectors, jobs, the bus).
//
//   pg_pool pool{cfg};
//   auto n = pool.with_connection([](pg_pool::lease& l) {
//     pqxx::nontransaction tx{l.conn()};
//     return tx.exec1("SELECT 1")[0].as<int>();
//   });
//
// A connection that breaks is dropped, never handed out again; the next
// borrower opens a fresh one (retrying with backoff for `connect_timeout`).
// libpqxx exceptions leave `with_connection` as `store_error`s.
#pragma once

#include "store/pg_config.hpp"
#include "store/pg_internal.hpp"

#include <pqxx/connection>
#include <pqxx/result>
#include <pqxx/transaction>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace dcbd {

/// A bounded, thread-safe pool of connections to one database.
class pg_pool {
public:
  /// A pooled connection and the statements prepared on it.
  struct slot {
    std::unique_ptr<pqxx::connection> conn;
    std::unordered_set<std::string> prepared;
  };

  /// A borrowed connection; returns it to the pool unless it broke.
  class lease {
  public:
    lease(pg_pool& owner, std::unique_ptr<slot> s);
    ~lease();

    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;

    /// The connection.
    pqxx::connection& conn() {
      return *slot_->conn;
    }

    /// Returns `name` after preparing it as `sql` on this connection, the
    /// first time only.
    const std::string& statement(const std::string& name,
                                 const std::string& sql);

    /// Drops the connection instead of returning it to the pool.
    void mark_broken() {
      broken_ = true;
    }

  private:
    pg_pool& owner_;
    std::unique_ptr<slot> slot_;
    bool broken_ = false;
  };

  /// Opens no connection yet; at most `cfg.pool_size` (at least one) are
  /// open at a time.
  explicit pg_pool(pg_config cfg);

  pg_pool(const pg_pool&) = delete;
  pg_pool& operator=(const pg_pool&) = delete;

  /// Runs `f(lease&)` on a borrowed connection, marking the connection
  /// broken on connection errors and translating exceptions into
  /// `store_error`.
  template <class F>
  auto with_connection(F&& f) {
    return pg::guarded([&] {
      lease l{*this, acquire()};
      try {
        return f(l);
      } catch (const pqxx::broken_connection&) {
        l.mark_broken();
        throw;
      } catch (const pqxx::sql_error& e) {
        if (pg::is_unavailable(e) || !l.conn().is_open())
          l.mark_broken();
        throw;
      }
    });
  }

  /// Runs `f(pqxx::work&)` in a transaction that never waits long (lock
  /// timeout 500 ms, statement timeout 2 s) and commits it when `f` returns:
  /// for calls made from a thread that must stay responsive (management,
  /// membership), which would rather fail than wait behind a row another
  /// transaction holds or a slow server. Errors as `with_connection`.
  template <class F>
  auto with_brief_transaction(F&& f) {
    return with_connection([&](lease& l) {
      pqxx::work tx{l.conn()};
      tx.exec("SET LOCAL lock_timeout = '500ms'");
      tx.exec("SET LOCAL statement_timeout = '2s'");
      auto r = f(tx);
      tx.commit();
      return r;
    });
  }

  /// Runs `sql` with text parameters as an unnamed statement, which
  /// PostgreSQL plans with the actual values. (A named prepared statement
  /// switches to a generic plan after five runs; for tag reads the generic
  /// plan walks the whole primary key instead of using the tag index.)
  pqxx::result query(const std::string& sql,
                     const std::vector<std::string>& params);

  /// Waits for an idle connection or opens one; throws `store_error`
  /// (`unavailable`) when none can be opened within `connect_timeout`.
  std::unique_ptr<slot> acquire();

  /// Returns a connection; drops it when `broken` or closed.
  void give_back(std::unique_ptr<slot> s, bool broken);

  /// How many connections were opened after the first one.
  std::uint64_t reconnects() const noexcept;

  /// The configuration the pool connects with.
  const pg_config& config() const noexcept {
    return cfg_;
  }

private:
  std::unique_ptr<slot> connect();

  pg_config cfg_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<slot>> idle_;
  std::size_t open_ = 0;
  std::atomic<std::uint64_t> opened_{0};
};

} // namespace dcbd
