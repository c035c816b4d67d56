// The jobs table and its SQL (API.md §7; the states are in
// store/job_model.hpp).
//
//   pg_jobs jobs{cfg};
//   auto ids = jobs.enqueue({{.kind = "email", .args = R"({"to":"a"})"}});
//   auto batch = jobs.fetch({.queue = "default", .max = 10, .worker = "n1"});
//   jobs.finish({{.id = batch[0].id, .lease = batch[0].lease}});
//
// Fetching takes the due jobs of a queue in (priority, scheduled_at, id)
// order with FOR UPDATE SKIP LOCKED inside a materialized CTE (without the
// fence the planner may update more rows than the limit), marks them
// running and gives each a new lease token from a sequence. `finish`
// applies many outcomes in one statement and only where the lease is still
// current. Enqueueing sends at most one NOTIFY per queue per transaction on
// `job_channel(schema)` with the queue as payload.
//
// Thread-safe: each call borrows a connection of its own pool. Failures are
// `store_error`s (unavailable when the database is unreachable).
#pragma once

#include "store/job_model.hpp"
#include "store/pg_config.hpp"

#include <pqxx/transaction>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dcbd {

/// The NOTIFY channel of `schema`'s job queues (payload: the queue).
std::string job_channel(const std::string& schema);

/// What an enqueue made.
struct enqueued_job {
  std::int64_t id = 0;
  job_state state = job_state::available;
  /// A live job with the same unique_key existed; `id` is that job's.
  bool duplicate = false;
};

/// What `fetch` asks for.
struct job_fetch {
  std::string queue = "default";
  /// Only these kinds (empty: any).
  std::vector<std::string> kinds;
  std::size_t max = 1;
  std::int64_t lease_ms = 30'000;
  /// Recorded as the job's `worker`.
  std::string worker;
};

/// What `finish_detailed` did with one outcome.
struct finished_job {
  /// The state it left the job in; nullopt when the lease was not current
  /// (and then the rest is empty).
  std::optional<job_state> state;
  std::string queue;
  std::string kind;
  /// When the attempt started.
  std::int64_t attempted_at_us = 0;
};

/// A filter for `list`.
struct job_filter {
  std::string queue;
  std::optional<job_state> state;
  std::string kind;
  /// Jobs with an id below it (paging backwards; 0: from the newest).
  std::int64_t before_id = 0;
  std::size_t limit = 100;
};

/// Jobs of one queue by state.
struct queue_counts {
  std::string queue;
  std::uint64_t by_state[std::size(all_job_states)] = {};
};

/// The result of a management call on one job.
struct job_change {
  enum class code : std::uint8_t { ok, not_found, conflict };
  code what = code::ok;
  /// The job after the change (or as it was, on conflict).
  job after;
};

/// A trigger (API.md §7): one job per event matching `query`.
struct job_trigger {
  std::string name;
  dcbd::query query;
  std::string queue = "default";
  std::string kind;
  /// Every matching event at or below it has its job.
  std::uint64_t position = 0;
  std::int64_t created_at_us = 0;
  int priority = 1;
  int max_attempts = 20;
};

/// A job that `rescue` took back from an expired lease.
struct rescued_job {
  std::int64_t id = 0;
  std::string queue;
  std::string kind;
  job_state state = job_state::available;
};

/// Settings of the maintenance calls.
struct job_retention {
  /// Completed and cancelled jobs are deleted after this long.
  std::chrono::seconds completed{24 * 3600};
  /// Discarded jobs are deleted after this long.
  std::chrono::seconds discarded{7 * 24 * 3600};
  /// Rows per pruning statement.
  std::size_t batch = 10'000;
};

/// A worker's own connection for jobs whose work runs in the database
/// (exactly-once effect). Not thread-safe: one per worker.
class pg_job_connection {
public:
  explicit pg_job_connection(pg_config cfg);
  ~pg_job_connection();

  pg_job_connection(const pg_job_connection&) = delete;
  pg_job_connection& operator=(const pg_job_connection&) = delete;

  enum class outcome : std::uint8_t {
    /// `work` returned true and the job completed in its transaction.
    committed,
    /// `work` returned false: everything was rolled back.
    rolled_back,
    /// The lease was not current: everything was rolled back.
    lease_lost,
  };

  /// Runs `work(tx)` in a transaction (opening the connection if needed);
  /// when it returns true, completes job `id` in the same transaction,
  /// fenced by `lease`, and commits. What `work` throws rolls back and
  /// propagates; database failures are `store_error`s (a broken connection
  /// is reopened next time).
  outcome run(std::int64_t id, std::int64_t lease,
              const std::function<bool(pqxx::work&)>& work);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The jobs of one schema.
class pg_jobs {
public:
  /// Installs the schema if needed; `pool` connections at most.
  explicit pg_jobs(pg_config cfg, std::size_t pool = 4);
  ~pg_jobs();

  pg_jobs(const pg_jobs&) = delete;
  pg_jobs& operator=(const pg_jobs&) = delete;

  // -- enqueue -----------------------------------------------------------

  /// Validates and inserts `jobs` in one transaction (all or nothing);
  /// a job whose unique_key a live job holds is not inserted and answers
  /// that job, `duplicate` set.
  std::vector<enqueued_job> enqueue(std::vector<job_request> jobs,
                                    const job_limits& lim = {});

  /// The same inside the caller's transaction `tx` (e.g. a projector's or a
  /// job's own): the jobs exist iff `tx` commits. `jobs` must be valid.
  std::vector<enqueued_job> enqueue(pqxx::work& tx,
                                    const std::vector<job_request>& jobs);

  // -- workers -----------------------------------------------------------

  /// Takes up to `f.max` due jobs of `f.queue` and marks them running.
  std::vector<job> fetch(const job_fetch& f);

  /// Applies outcomes in one statement. Per outcome, the state it left the
  /// job in, or nullopt when its lease was not current (lease lost).
  std::vector<std::optional<job_state>>
  finish(const std::vector<job_outcome>& outcomes);

  /// The same, with each finished job's queue, kind and attempt start (for
  /// metrics), from the same statement.
  std::vector<finished_job>
  finish_detailed(const std::vector<job_outcome>& outcomes);

  /// Completes `id` inside the caller's transaction `tx`, fenced by
  /// `lease`: false (and nothing changes) when the lease is not current.
  bool complete(pqxx::work& tx, std::int64_t id, std::int64_t lease);

  /// Extends the leases of running jobs to now + `lease_ms` (0: the length
  /// the attempt's fetch or latest heartbeat asked for); per job, whether
  /// its lease was current.
  std::vector<bool> heartbeat(const std::vector<std::int64_t>& ids,
                              const std::vector<std::int64_t>& leases,
                              std::int64_t lease_ms);

  // -- maintenance -------------------------------------------------------

  /// Running jobs whose lease expired become available again (attempts
  /// left) or discarded; at most `limit`.
  std::vector<rescued_job> rescue(std::size_t limit = 1000);

  /// Due scheduled and retryable jobs become available (fetch takes them
  /// when due anyway; this keeps the reported states true). Returns how
  /// many.
  std::size_t promote_due(std::size_t limit = 5000);

  /// Deletes finished jobs past retention; returns how many.
  std::size_t prune(const job_retention& r);

  // -- management --------------------------------------------------------

  std::optional<job> get(std::int64_t id);

  /// Newest first.
  std::vector<job> list(const job_filter& f);

  /// Cancels a job that is not final (a running one's lease is revoked:
  /// its worker's outcome is refused).
  job_change cancel(std::int64_t id);

  /// Makes a job that is not running available now; a job that used all
  /// its attempts gets one more.
  job_change retry(std::int64_t id);

  /// Per queue that has jobs, the count in each state.
  std::vector<queue_counts> counts();

  // -- triggers ----------------------------------------------------------

  /// Creates a trigger starting after position `from` (absent: the head
  /// now). False when one with that name exists.
  bool create_trigger(const job_trigger& t, std::optional<std::uint64_t> from);

  std::vector<job_trigger> triggers();

  /// False when there is no such trigger.
  bool delete_trigger(const std::string& name);

  /// What `fire` did: the trigger's checkpoint after, and the jobs it
  /// inserted (replays insert none).
  struct fired {
    std::uint64_t checkpoint = 0;
    std::size_t jobs = 0;
  };

  /// In one transaction: locks the trigger's row, inserts a job for each of
  /// `events` (in position order) above its checkpoint, and moves the
  /// checkpoint to `upto` (≥ the last event's position) unless it is
  /// already further. nullopt when the trigger no longer exists. A
  /// (trigger, position) pair gets one job ever, so replays insert nothing
  /// twice.
  std::optional<fired> fire(const std::string& trigger,
                            const std::vector<sequenced_event>& events,
                            std::uint64_t upto);

  /// Connections reopened after the first.
  std::uint64_t reconnects() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace dcbd
