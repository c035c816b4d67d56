// Reads from a PostgreSQL streaming-replication standby, kept linearizable.
//
// A read must see every append acknowledged before it began: it must see
// the head h of a read index (store/read_index.hpp, a query of the
// PRIMARY's head that started after the read did), or the head its caller
// already knows (`read_scope::must_see`). The standby serves it when it has
// replayed h: the `head` row is updated in the transaction of the events,
// so the standby's `SELECT position FROM <schema>.head` is exactly the head
// it has replayed, in positions, and any of its snapshots is a prefix of
// the log (positions are gap-free and in commit order, and replay keeps
// commit order). The read runs on the standby capped at h (`until`, or
// `from` when backwards) and answers with head h: the same answer the
// primary gave at h, never a head the primary has not confirmed. A standby
// behind h gets `wait` to replay it (one waiting read polls the head table
// for all of them), then the read goes to the primary. A standby that
// fails is left alone with a backoff; its reads go to the primary.
//
// Appends, the head, and every other statement (conditions, checkpoints,
// jobs, LISTEN, the read index itself) stay on the primary: only `read`
// and `stream` of a `replica_event_store` ever reach the standby.
#pragma once

#include "store/event_store.hpp"
#include "store/read_index.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace dcbd {

class pg_pool;

/// Where a read went and why; the labels of
/// `dcb_replica_reads_total{served_by, reason}`.
enum class replica_route : std::uint8_t {
  /// The standby: it had replayed the read's head at the first look.
  replica_caught_up,
  /// The standby: it replayed the read's head within the wait.
  replica_waited,
  /// The primary: the standby was still behind after the wait.
  primary_lagging,
  /// The primary: the standby failed lately and is backing off.
  primary_down,
  /// The primary: a standby query or connection failed during this read
  /// (also a stream that moved to the primary midway).
  primary_failed,
  /// The primary: the head the read must see is unknown (the primary's
  /// head query failed), so the primary answers or reports the error.
  primary_no_index,
};

/// The number of `replica_route` values.
inline constexpr std::size_t replica_routes = 6;

/// "replica" or "primary".
const char* served_by(replica_route r) noexcept;

/// "caught_up", "waited", "lagging", "down", "failed", "no_index".
const char* reason_of(replica_route r) noexcept;

/// Metrics hooks (runtime/metrics.hpp implements them); called on reading
/// threads, so they must be thread-safe and quick.
class replica_metrics {
public:
  virtual ~replica_metrics() = default;

  /// A read went where `r` says.
  virtual void routed(replica_route r) = 0;

  /// A look at the standby found it had replayed `replayed`, `lag`
  /// positions behind the head a read needed (0: caught up).
  virtual void replay(std::uint64_t replayed, std::uint64_t lag) = 0;

  /// The standby failed (false) or answered again after failing (true).
  virtual void up(bool up) = 0;
};

/// How to use a standby.
struct replica_config {
  /// libpq connection string of the standby; empty: no replica, every read
  /// goes to the primary.
  std::string dsn;
  /// How long a read waits for the standby to replay the head it must see
  /// before it goes to the primary. While the standby stays behind (a
  /// wait ran out and no read was served by it since), reads take one
  /// look and do not wait.
  std::chrono::milliseconds wait{20};
  /// How often a waiting read looks at the standby's head.
  std::chrono::milliseconds poll{1};
  /// After a failure, reads leave the standby alone for a backoff that
  /// doubles from `backoff_min` to `backoff_max`; then one read tries it.
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{5000};
  /// libpq's `connect_timeout` (seconds), added to `dsn` unless it names
  /// one: a standby host that does not answer holds one read this long.
  int connect_timeout_s = 2;
  /// Metrics hooks; may be null.
  std::shared_ptr<replica_metrics> metrics;
};

/// What a standby did since it was made.
struct replica_stats {
  /// Reads by `replica_route`.
  std::array<std::uint64_t, replica_routes> reads{};
  /// The standby's replayed head at the last look.
  std::uint64_t replayed = 0;
  /// How far that was behind the head a read needed (0: caught up).
  std::uint64_t lag = 0;
  /// Whether it answers (false while it backs off after a failure).
  bool up = true;
  /// Failures (each starts or extends a backoff).
  std::uint64_t failures = 0;
  /// Looks at its head by waiting reads.
  std::uint64_t polls = 0;

  std::uint64_t by_replica() const noexcept;
  std::uint64_t by_primary() const noexcept;
};

/// `dsn` with libpq's `connect_timeout` set to `seconds`, unless it sets
/// one (key=value strings and postgres:// URIs).
std::string with_connect_timeout(const std::string& dsn, int seconds);

/// A node's standby for one schema: its health, the head it has replayed
/// as far as the node knows, and counters. Shared by the node's replica
/// stores, each of which has its own connections. Thread-safe.
class standby {
public:
  standby(replica_config cfg, std::string schema);

  standby(const standby&) = delete;
  standby& operator=(const standby&) = delete;

  const replica_config& config() const noexcept {
    return cfg_;
  }

  const std::string& schema() const noexcept {
    return schema_;
  }

  replica_stats stats() const;

  // -- used by replica_event_store -------------------------------------------

  /// Whether a read may use the standby now; `probe` is set when this read
  /// is the one that tries it again after a backoff.
  bool usable(bool& probe);

  /// A standby statement failed with `what`: back off.
  void failed(const std::string& what, bool probe);

  /// Standby statements succeeded (clears a backoff).
  void answered(bool probe);

  /// Whether the standby has been seen to have replayed `h`.
  bool has(std::uint64_t h) const;

  /// Whether reads may read the standby at once, without looking at its
  /// head first: the last read found it caught up.
  bool prompt() const noexcept {
    return prompt_.load(std::memory_order_relaxed);
  }

  /// A look (a poll, or a read's snapshot) found the standby at `replayed`
  /// (nothing: its schema is not there yet) while a read needed `h`.
  void observed(std::optional<std::uint64_t> replayed, std::uint64_t h);

  /// Waits until the standby has replayed `h` or `deadline` passes, taking
  /// at least one look that started after this call began. `look` reads
  /// the standby's head (nothing: no schema yet) on the caller's
  /// connection; concurrent waiters share one look at a time. Sets
  /// `behind` when a look found it short of `h`. Throws what `look` throws.
  bool wait_for(std::uint64_t h, std::chrono::steady_clock::time_point deadline,
                const std::function<std::optional<std::uint64_t>()>& look,
                bool& behind);

  /// How long the next read may wait: `wait`, or 0 while the standby stays
  /// behind.
  std::chrono::milliseconds budget() const noexcept;

  /// A read was served by the standby (`first_look`: without waiting) or
  /// went to the primary because the standby lagged.
  void served(bool first_look);
  void lagged();

  /// Counts a read's route (and tells the metrics).
  void count(replica_route r);

private:
  replica_config cfg_;
  std::string schema_;
  mutable std::mutex mtx_;
  std::condition_variable looked_;
  // The schema has been seen on the standby, at this replayed head.
  bool seen_ = false;
  std::uint64_t replayed_ = 0;
  std::uint64_t lag_ = 0;
  // One look at a time, numbered as they start; `looks_` is the number of
  // the last one finished.
  bool looking_ = false;
  std::uint64_t looks_started_ = 0;
  std::uint64_t looks_ = 0;
  std::chrono::steady_clock::time_point last_look_{};
  // Backoff after failures.
  bool down_ = false;
  bool probing_ = false;
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::milliseconds backoff_{0};
  std::uint64_t failures_ = 0;
  std::atomic<bool> prompt_{false};
  std::atomic<bool> lagging_{false};
  std::array<std::atomic<std::uint64_t>, replica_routes> reads_{};
};

/// An event store whose reads and streams go to a standby when it has
/// replayed the head they must see (see the top of this file), and to
/// `primary` otherwise; appends, `head()` and everything else go to
/// `primary`. The head a read must see comes from the current
/// `read_scope`'s `must_see`, else from `index` (over the primary's head).
class replica_event_store final : public event_store {
public:
  /// Reads the standby with `connections` connections of its own.
  replica_event_store(std::shared_ptr<event_store> primary,
                      std::shared_ptr<standby> replica,
                      std::shared_ptr<read_index> index,
                      std::size_t connections);
  ~replica_event_store() override;

  replica_event_store(const replica_event_store&) = delete;
  replica_event_store& operator=(const replica_event_store&) = delete;

  std::vector<append_result>
  append_validated(const std::vector<validated_append>& group) override;

  std::vector<append_result>
  append_prechecked(const std::vector<validated_append>& group,
                    std::span<const std::uint64_t> checked_through) override;

  read_result read(const query& q, const read_options& options = {}) override;

  std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options = {},
         const stream_options& chunking = {}) override;

  std::uint64_t head() override;

  std::uint64_t reconnects() const noexcept override;

  /// The store every read can fall back to.
  const std::shared_ptr<event_store>& primary() const noexcept {
    return primary_;
  }

private:
  class stream_impl;

  // The head the current read must see; nothing when the read index failed.
  std::optional<std::uint64_t> must_see();

  // Routes a read that must see `h`: runs `attempt(h)` on the standby (it
  // returns the head of its snapshot) when the standby may serve it,
  // waiting for the standby as the config says. Returns where it went; a
  // primary route means `attempt`'s output is to be thrown away.
  replica_route
  route(std::uint64_t h,
        const std::function<std::uint64_t(std::uint64_t)>& attempt);

  // The standby's replayed head (nothing: no schema there yet).
  std::optional<std::uint64_t> look();

  std::shared_ptr<event_store> primary_;
  std::shared_ptr<standby> standby_;
  std::shared_ptr<read_index> index_;
  std::unique_ptr<pg_pool> pool_;
  std::string head_sql_;
};

} // namespace dcbd
