// Reads below the event cache, straight from PostgreSQL on the HTTP threads.
//
// A read the cache cannot answer whole (its events were evicted, or the
// range starts below the cache) otherwise takes the reader path: a stream
// slot, a reader actor, a read index, then page queries on a blocking
// connection, about ten thread hand-offs in all. Here it is one statement
// on one of a few non-blocking connections of the server's event loop
// (runtime/pg_async.hpp), the very page query the store sends
// (store/pg_read: `make_page`), and the answer is formatted where the
// result arrives.
//
// Linearizable by itself: the statement starts after the read did, and its
// rows come with the head of its own snapshot, which sees every append
// acknowledged before (so it needs no read index). It is sent to the
// primary: a read replica may lag.
//
// Each connection prepares the statements it sends (one text per query
// shape), and plans every execution for its values (`plan_cache_mode =
// force_custom_plan`), as an unprepared statement is planned.
//
// Only answers of at most `max_events` events (one chunk of a stream) are
// read this way: the statement asks for one more, and a longer answer (or
// any failure, bad input included) answers nothing, so that the caller
// takes the reader path, which streams it, reports errors and retries on
// other connections.
//
//   database_reads reads{io, {dsn, schema, 4}};
//   reads.read(q, options, 1000, [](std::optional<read_result> r) { ... });
#pragma once

#include "runtime/pg_async.hpp"
#include "store/model.hpp"

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace dcbd::http {

class database_reads {
public:
  struct config {
    /// libpq connection string of the primary, and the store's schema.
    std::string dsn;
    std::string schema = "dcb";
    /// Connections (each opened when first needed).
    std::size_t connections = 4;
    /// Longest a statement may take (then the reader path takes over).
    std::chrono::milliseconds timeout{5000};
    /// Reads waiting for a connection at most (past that: the reader path).
    std::size_t max_waiting = 1024;
    /// What validation enforces (the store's limits).
    limits input_limits{};
  };

  database_reads(boost::asio::io_context& io, config cfg);

  /// Reads still waiting or running are dropped without an answer: destroy
  /// it once the loop has stopped.
  ~database_reads();

  database_reads(const database_reads&) = delete;
  database_reads& operator=(const database_reads&) = delete;

  /// Reads `q` with `options` and calls `done` once, on a connection's
  /// strand, with the answer (events and the head of its snapshot) when it
  /// has at most `max_events` events, else with nothing.
  void read(const query& q, const read_options& options, std::size_t max_events,
            std::function<void(std::optional<read_result>)> done);

  /// Reads waiting or running get nothing, and so does every later one.
  void close();

private:
  config cfg_;
  // Cleared when this goes: statements still in flight then answer no one.
  std::shared_ptr<std::atomic<bool>> live_
    = std::make_shared<std::atomic<bool>>(true);
  std::shared_ptr<pg_connection_pool> pool_;
};

} // namespace dcbd::http
