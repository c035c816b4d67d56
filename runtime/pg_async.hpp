// PostgreSQL on the HTTP threads: libpq connections in non-blocking mode,
// driven by an asio event loop, so a query costs no thread hand-off. The
// loop sends the statement, is woken by the answer like by any socket, and
// runs the callback on its own thread.
//
//   auto c = pg_connection::make(io, {dsn});
//   c->exec("SELECT $1::bigint", {"7"}, [](pg_result_ptr r) { ... });
//
//   auto pool = pg_connection_pool::make(io, {{dsn}, 4});
//   pool->exec(sql, params, done);     // a free connection, or in line
//
// Used by the read index's head query (runtime/pg_head_reader) and by reads
// below the event cache (runtime/routes_common: `read_from_database`).
//
// A failed or slow statement (past `timeout`) answers null; a failure of the
// connection or a timeout also drops it, and the next statement reconnects,
// at most once per `retry` (until then statements answer null at once). An
// error result (a bad statement) answers null and keeps the connection.
// Connecting is non-blocking too (PQconnectStart and PQconnectPoll on the
// loop), except for resolving a host name, which libpq does inside
// PQconnectStart: a DSN with `hostaddr` (or an IP address as `host`) avoids
// that short block of the loop.
#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

// libpq's result (PGresult), kept out of this header.
struct pg_result;

namespace dcbd::http {

/// A result of PQgetResult, cleared when the last owner lets go.
using pg_result_ptr = std::shared_ptr<const ::pg_result>;

using pg_callback = std::function<void(pg_result_ptr)>;

class pg_connection : public std::enable_shared_from_this<pg_connection> {
public:
  struct config {
    /// libpq connection string.
    std::string dsn;
    /// Longest a statement (connecting included) may take.
    std::chrono::milliseconds timeout{2000};
    /// Least time between a failure and the next connection attempt.
    std::chrono::milliseconds retry{1000};
    /// Run once on every new connection before its first statement (e.g.
    /// `SET ...`); a connection whose setup fails is dropped.
    std::string setup;
    /// Statements prepared per connection, each the first time its text is
    /// sent and executed by name from then on (which saves parsing it);
    /// past that many texts the others are sent unprepared. 0: none.
    /// Mind generic plans: PostgreSQL may plan a prepared statement once
    /// for any parameters; `setup` can keep custom plans
    /// (`SET plan_cache_mode = force_custom_plan`).
    std::size_t max_prepared = 0;
  };

  /// Connects when the first statement needs it.
  static std::shared_ptr<pg_connection> make(boost::asio::io_context& io,
                                             config cfg);

  ~pg_connection();

  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  /// Sends one statement with text parameters (`$1`, ...), connecting first
  /// when needed, and calls `done` once, on the connection's strand, with
  /// its result (rows or a command's completion) or null. One statement at
  /// a time: a second call while one is in flight gets null at once.
  void exec(std::string sql, std::vector<std::string> params, pg_callback done);

  /// Runs `f` on the connection's strand, later (never inside the call).
  void post(std::function<void()> f);

  /// Closes the connection (on the strand); a statement in flight gets
  /// null, and so does every later one. Destroying the connection (once its
  /// loop has stopped) closes it too.
  void close();

  /// Connections opened so far, and the server process of the current one
  /// (0 when none; e.g. for `pg_terminate_backend` in a test).
  std::uint64_t connects() const noexcept {
    return connects_.load();
  }
  /// Statements prepared on the current connection.
  std::size_t prepared() const noexcept {
    return prepared_.load();
  }
  int backend_pid() const noexcept {
    return pid_.load();
  }

  struct state;

private:
  pg_connection(boost::asio::io_context& io, config cfg);

  std::unique_ptr<state> st_;
  std::atomic<std::uint64_t> connects_{0};
  std::atomic<int> pid_{0};
  std::atomic<std::size_t> prepared_{0};
};

/// A fixed number of connections on one loop; statements take a free one
/// or wait in line for it, in arrival order.
class pg_connection_pool
  : public std::enable_shared_from_this<pg_connection_pool> {
public:
  struct config {
    pg_connection::config connection;
    /// Connections (each opened when first needed).
    std::size_t size = 4;
    /// Statements waiting for a connection at most; past that a statement
    /// gets null at once.
    std::size_t max_waiting = 1024;
  };

  static std::shared_ptr<pg_connection_pool> make(boost::asio::io_context& io,
                                                  config cfg);

  /// Runs the statement on a free connection, or once one is free. `done`
  /// as in `pg_connection::exec`, on that connection's strand (null also
  /// when the line is full or the pool closed).
  void exec(std::string sql, std::vector<std::string> params, pg_callback done);

  /// Closes every connection: what waits or runs gets null, and so does
  /// every later statement.
  void close();

  /// Statements running and waiting now.
  std::size_t running() const;
  std::size_t waiting() const;

  /// The pool's connections (for tests and metrics).
  const std::vector<std::shared_ptr<pg_connection>>& connections() const {
    return conns_;
  }

private:
  struct job {
    std::string sql;
    std::vector<std::string> params;
    pg_callback done;
  };

  explicit pg_connection_pool(config cfg);

  void run(std::size_t i, job j);
  void release(std::size_t i);

  config cfg_;
  std::vector<std::shared_ptr<pg_connection>> conns_;
  mutable std::mutex mu_;
  std::vector<std::size_t> free_;
  std::deque<job> line_;
  bool closed_ = false;
};

} // namespace dcbd::http
