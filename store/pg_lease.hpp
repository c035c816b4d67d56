// The read lease: reads with no query on a node that is its schema's only
// writer.
//
// A linearizable read from the cache (or a standby) first takes a read
// index, the head of the log read by a query that started after the read
// did (store/read_index.hpp). That query is what the reads of a node cost
// PostgreSQL once the events are in memory. A node that knows no other
// process can have committed since some position needs no query: its own
// commits are in its cache before they are acknowledged. The lease is how
// it knows, as Raft's leader leases let a leader read without a round.
//
// The lease lives in the head row, the lock every commit takes:
//   - A holder (a random id per process) takes it with
//     `UPDATE head SET lease_owner = me, lease_until = clock_timestamp() +
//     term` when it is free or expired and nobody else has committed for
//     `quiet`, and renews it every `term / 10` the same way (`WHERE lease_owner
//     = me`).
//   - Every commit that appends events and is not the holder's (another
//     node, an older binary, a store without a lease) waits, holding the head
//     lock, until `lease_until` has passed on the database's clock, and
//     clears the owner. The holder cannot renew meanwhile (renewing takes the
//     same lock), and a renewal after the commit finds no owner: lost.
//   - The holder trusts its lease until `term / 2` after it sent the
//     statement that took or renewed it (its own monotonic clock; the
//     database set `lease_until` later than it sent, a full `term` ahead).
//     So every commit not its own that was acknowledged before a read began
//     committed before the lease was taken (at most its position) or after
//     the holder stopped trusting it (the read then takes a query).
//
// What it costs: a writer that is not the holder waits up to `term` once
// (then the lease is gone for at least `quiet`), and holds up every other
// commit meanwhile. What it assumes: the clocks of the database server and
// of the holder run at about the same rate, and the database's never steps
// forward by more than `term / 2` while a lease is held. Events written by
// anything other than the store's statements (plain SQL) are not seen by
// it. Opt-in: `--dcbd.read-lease-ms` (0, the default, holds none).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace dcbd {

struct read_lease_config {
  /// libpq connection string of the primary.
  std::string dsn;
  /// The store's schema (installed already).
  std::string schema = "dcb";
  /// How long a lease lasts on the database's clock; the holder trusts it
  /// for half of that and renews it ten times per term.
  std::chrono::milliseconds term{1000};
  /// How long nobody else must have committed before the lease is taken
  /// (also after it was lost).
  std::chrono::milliseconds quiet{5000};
};

/// Counters of a read lease since it was made.
struct read_lease_stats {
  std::uint64_t acquisitions = 0;
  /// Renewals that found the lease gone (another writer committed).
  std::uint64_t losses = 0;
  /// Statements that failed (the connection broke, the server went away).
  std::uint64_t failures = 0;
  bool held = false;
};

class read_lease {
public:
  /// Starts a thread with a connection of its own that takes the lease
  /// when it can and renews it.
  explicit read_lease(read_lease_config cfg);

  /// Stops trusting the lease, gives it back (best effort) and stops.
  ~read_lease();

  read_lease(const read_lease&) = delete;
  read_lease& operator=(const read_lease&) = delete;

  /// This process's id as a writer: the store's commits carry it.
  std::int64_t writer() const noexcept {
    return writer_;
  }

  /// While the lease is trusted: a read index that needs no query, the
  /// head at the lease's start or of this writer's last commit since,
  /// whichever is later. Nothing otherwise. Wait-free.
  std::optional<std::uint64_t> index() const noexcept;

  /// This writer committed up to `position` (the store calls it before it
  /// answers the commit).
  void committed(std::uint64_t position) noexcept;

  read_lease_stats stats() const;

private:
  void run();
  // Takes or renews the lease; false when it was not taken (or lost).
  bool attempt(bool held);
  void release();

  read_lease_config cfg_;
  std::int64_t writer_;
  // Trusted until this steady-clock time (ns since its epoch); 0: not held.
  std::atomic<std::int64_t> until_ns_{0};
  std::atomic<std::uint64_t> base_{0};
  std::atomic<std::uint64_t> committed_{0};
  std::atomic<std::uint64_t> acquisitions_{0};
  std::atomic<std::uint64_t> losses_{0};
  std::atomic<std::uint64_t> failures_{0};
  struct connection;
  std::unique_ptr<connection> conn_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace dcbd
