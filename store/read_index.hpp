// The read index: what makes reads from the cache linearizable.
//
// A read must see every append acknowledged (by any node) before it began.
// Before serving from memory, a read takes a read index: the head of the
// log in the database, read by a query that started after the read did.
// Once the cache holds the log up to that head, an answer from the cache
// at its own (later or equal) head is as fresh as a read from the database
// would have been. As Raft's ReadIndex does with heartbeats, reads share the
// query: every read that arrives while one is in flight waits for the next
// one, which then serves all of them (one that started before they arrived
// could miss an append acknowledged just before they began).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace dcbd {

/// Counters of a read index since it was made.
struct read_index_stats {
  /// Queries sent (rounds) and reads they served.
  std::uint64_t rounds = 0;
  std::uint64_t reads = 0;
  /// Rounds that failed (their reads go to the database instead).
  std::uint64_t failures = 0;
  /// The largest round so far, in reads.
  std::uint64_t max_batch = 0;
  /// Reads the lease served without a query (not counted in `reads`).
  std::uint64_t lease_reads = 0;
  /// The engine's read lease (store/pg_lease.hpp), filled in by
  /// `engine::index_stats`: held now, times taken, times lost to another
  /// writer.
  bool lease_held = false;
  std::uint64_t lease_acquisitions = 0;
  std::uint64_t lease_losses = 0;
};

/// Leads the rounds of `read_index::get_async` without a thread of the
/// index's own, e.g. on an event loop that owns an asynchronous database
/// connection: the loop's thread then runs the callbacks too, and reads
/// that arrive while it is busy join the next round.
struct read_index_leader {
  /// Runs `f` later, never inside the call (e.g. `asio::post`).
  std::function<void(std::function<void()>)> post;
  /// Sends one query for the head now and calls `done` once with it, or
  /// with nothing when it failed (also when the leader goes away first).
  std::function<void(std::function<void(std::optional<std::uint64_t>)>)> fetch;
};

class read_index : public std::enable_shared_from_this<read_index> {
public:
  /// `fetch_head` reads the head from the database (thread-safe; called by
  /// one thread at a time).
  explicit read_index(std::function<std::uint64_t()> fetch_head);

  read_index(const read_index&) = delete;
  read_index& operator=(const read_index&) = delete;

  /// Stops the thread of `get_async`; callbacks still waiting get nothing.
  ~read_index();

  /// Returns a head at least as recent as a query started after this call
  /// began, or nothing when that query failed. Blocks; the calling thread
  /// runs the query itself unless another one is in flight. While the lease
  /// (`use_lease`) gives a head, that head, at once and with no query.
  std::optional<std::uint64_t> get();

  /// As `get`, without blocking: `done` runs with the head (or nothing) on
  /// the index's own thread once a query started after this call finished,
  /// the same query every other read waiting then shares; or inside this
  /// call with the lease's head. Keep `done` short (post the work
  /// elsewhere).
  void get_async(std::function<void(std::optional<std::uint64_t>)> done);

  /// Reads first ask `lease` (store/pg_lease.hpp): a head it gives must,
  /// like a query's, be at least the position of every commit acknowledged
  /// before the call. Call before the first read (not synchronized).
  void use_lease(std::function<std::optional<std::uint64_t>()> lease);

  /// From now on `get_async` rounds are led by `leader` (its callbacks run
  /// where the leader's `post` and `fetch` call back), until `lead_alone`.
  /// The index must be owned by a `std::shared_ptr` (what is posted holds
  /// it weakly).
  void lead_with(std::shared_ptr<read_index_leader> leader);

  /// Back to the index's own thread: a round the leader still has in
  /// flight counts as failed (its reads go to the database), and nothing is
  /// posted to the leader any more. Call before the leader's loop stops.
  void lead_alone();

  read_index_stats stats() const;

  /// The read lease's head when the lease is held (counted as a lease
  /// read), else nothing: a read index without a query or a wait, which
  /// `get` and `get_async` return themselves when they can.
  std::optional<std::uint64_t> leased();

private:
  using callback = std::function<void(std::optional<std::uint64_t>)>;
  struct waiter {
    std::uint64_t need;
    callback done;
  };

  // Runs one round as its leader (`lock` held on entry and on return).
  void lead_round(std::unique_lock<std::mutex>& lock);

  // The result for a read that needs round `need` (finished).
  std::optional<std::uint64_t> result_for(std::uint64_t need) const;

  // The thread of `get_async`: leads rounds while callbacks wait and runs
  // the callbacks whose round finished.
  void run_async();

  // Has waiting callbacks served: by the thread, or by a round the leader
  // is asked to start (`lock` held).
  void wake(std::unique_lock<std::mutex>& lock);

  // The leader's turn: answers the callbacks whose round finished and
  // starts a round for the others.
  void lead_async();

  // A round of the leader finished (`round` numbered, `batch` reads).
  void finish_async(std::uint64_t round, std::uint64_t batch,
                    std::optional<std::uint64_t> head);

  // Ends round `round` (`lock` held): counts it, keeps its head.
  void finish_round(std::uint64_t round, std::uint64_t batch,
                    std::optional<std::uint64_t> head);

  // Moves the callbacks whose round finished into `ready` (`lock` held).
  void take_ready(
    std::vector<std::pair<callback, std::optional<std::uint64_t>>>& ready);

  std::function<std::uint64_t()> fetch_;
  std::function<std::optional<std::uint64_t>()> lease_;
  std::atomic<std::uint64_t> lease_reads_{0};
  mutable std::mutex mutex_;
  std::condition_variable done_cv_;
  bool in_flight_ = false;
  // Rounds started and finished; the head of the last finished round (heads
  // only grow, so any finished round at or after the one a read needs will
  // do) and the last round that failed.
  std::uint64_t started_ = 0;
  std::uint64_t finished_ = 0;
  std::uint64_t head_ = 0;
  std::uint64_t failed_round_ = 0;
  // Reads that arrived since the last round started (the next one serves
  // them).
  std::uint64_t unassigned_ = 0;
  read_index_stats stats_;
  // Callbacks of `get_async`, in arrival order (so by `need`).
  std::deque<waiter> waiters_;
  std::condition_variable async_cv_;
  bool stopping_ = false;
  std::thread async_thread_;
  // The leader (if any), whether its turn is posted, and the round it has
  // in flight (0 if none).
  std::shared_ptr<read_index_leader> leader_;
  bool posted_ = false;
  std::uint64_t leader_round_ = 0;
  std::uint64_t leader_batch_ = 0;
};

} // namespace dcbd
