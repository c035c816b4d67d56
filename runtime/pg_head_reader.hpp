// The read index's query on the HTTP threads (store/read_index.hpp).
//
// A read from the cache first takes a read index: the head, read from
// PostgreSQL by a query that started after the read did. Led by a thread of
// the index's own, every such round costs two thread hand-offs (waking the
// thread, then posting its answers back to the connections), and on a
// two-core machine those cost about a third of the read throughput. This
// reader runs the query on a connection of the HTTP server's event loop
// (runtime/pg_async.hpp): the loop sends it, is woken by the answer like by
// any socket, and answers the reads on its own thread; reads that arrive
// while it is busy share the next round.
//
//   auto r = pg_head_reader::make(io, {dsn, pg_head_sql(schema)});
//   index->lead_with(r->leader());     // ... index->lead_alone(); r->close();
//
// A failed or slow round (past `timeout`) answers nothing (the reads then go
// to the database the usual way) and drops the connection; the next round
// reconnects, at most once per `retry` (see pg_connection).
#pragma once

#include "runtime/pg_async.hpp"
#include "store/read_index.hpp"

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace dcbd::http {

class pg_head_reader : public std::enable_shared_from_this<pg_head_reader> {
public:
  struct config {
    /// libpq connection string (the primary: a standby may lag).
    std::string dsn;
    /// The query; one row, one column (store/pg_head.hpp).
    std::string sql;
    /// Longest a round (connecting included) may take.
    std::chrono::milliseconds timeout{2000};
    /// Least time between a failure and the next connection attempt.
    std::chrono::milliseconds retry{1000};
  };

  /// Connects when the first round needs it.
  static std::shared_ptr<pg_head_reader> make(boost::asio::io_context& io,
                                              config cfg);

  ~pg_head_reader();

  pg_head_reader(const pg_head_reader&) = delete;
  pg_head_reader& operator=(const pg_head_reader&) = delete;

  /// Sends the query (connecting first when needed) and calls `done` once,
  /// on the reader's strand, with the head or nothing. One round at a time:
  /// a second call while one is in flight gets nothing at once.
  void fetch(std::function<void(std::optional<std::uint64_t>)> done);

  /// A leader for `read_index::lead_with` over this reader.
  std::shared_ptr<read_index_leader> leader();

  /// Closes the connection (on the strand); a round in flight gets nothing.
  /// Destroying the reader (once its loop has stopped) closes it too.
  void close();

  /// Connections opened so far, and the server process of the current one
  /// (0 when none; e.g. for `pg_terminate_backend` in a test).
  std::uint64_t connects() const noexcept {
    return conn_->connects();
  }
  int backend_pid() const noexcept {
    return conn_->backend_pid();
  }

private:
  pg_head_reader(boost::asio::io_context& io, config cfg);

  std::string sql_;
  std::shared_ptr<pg_connection> conn_;
};

} // namespace dcbd::http
