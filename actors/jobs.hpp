// The job dispatcher: durable background jobs in PostgreSQL (DESIGN §3,
// API.md §7; the states are in store/job_model.hpp, the SQL in
// store/pg_jobs.hpp).
//
//   dcbd::job_worker_spec w;
//   w.kind = "send_confirmation";
//   w.concurrency = 4;
//   w.handle = [](const dcbd::job& j) {
//     send_mail(j.args);
//     return dcbd::job_result::ok();
//   };
//   jobs.add_worker(std::move(w));          // jobs: the node's job_service
//   jobs.enqueue_blocking({{.kind = "send_confirmation"}});
//
// One dispatcher actor per node fetches due jobs in batches sized by its
// free worker slots (per queue, woken by NOTIFY, polling besides), hands
// them to detached worker actors (`concurrency` per kind), applies their
// outcomes in batches (one statement for many), and extends the leases of
// the jobs it runs. Every attempt has a lease token; an outcome with a
// stale token changes nothing (the job was rescued and runs elsewhere, or
// was cancelled). Leases that expire (a node that died or froze) are
// rescued by any node's maintenance within about a second, which also
// makes due scheduled jobs available and prunes finished ones.
//
// Guarantees: at-least-once execution; exactly-once effect for work done
// in the job's own transaction (`handle_tx`: the completion commits with
// it, fenced by the lease); enqueue inside an append (append_request::jobs)
// exists iff the append is accepted; a trigger makes exactly one job per
// matching event, also across crashes (store/pg_jobs.hpp `fire`).
//
// Triggers: every node follows every trigger through the bus from the
// trigger's checkpoint; `fire` serializes them on the trigger's row and
// skips what another node already covered, so a trigger keeps working
// while any node runs. (Each node reads the trigger's events; the cluster
// issue may give triggers one owner each.)
#pragma once

#include "store/job_model.hpp"
#include "store/pg_config.hpp"
#include "store/pg_jobs.hpp"

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dcbd {

class engine;

/// What a worker made of an attempt.
struct job_result {
  job_outcome::kind what = job_outcome::kind::complete;
  std::string error;
  /// fail: retry after this long instead of the retry curve; snooze: how
  /// long to wait.
  std::optional<std::chrono::milliseconds> delay;

  static job_result ok() {
    return {};
  }
  /// Failed; retried after `retry_in` (default: the retry curve) while
  /// attempts are left, else discarded.
  static job_result
  retry(std::string error,
        std::optional<std::chrono::milliseconds> retry_in = std::nullopt) {
    return {job_outcome::kind::fail, std::move(error), retry_in};
  }
  /// Not now: runs again after `delay`; the attempt does not count.
  static job_result snooze(std::chrono::milliseconds delay) {
    return {job_outcome::kind::snooze, {}, delay};
  }
  /// Failed for good.
  static job_result discard(std::string error) {
    return {job_outcome::kind::discard, std::move(error), std::nullopt};
  }
};

/// Runs one attempt. A throw counts as `retry(what())`.
using job_handler = std::function<job_result(const job&)>;

/// Runs one attempt inside a transaction on the worker's own connection;
/// when it returns ok the job completes in that same transaction (fenced by
/// its lease: if the lease is no longer current, everything rolls back).
/// Any other result rolls the transaction back.
using job_tx_handler = std::function<job_result(pqxx::work&, const job&)>;

/// In-process workers of one kind.
struct job_worker_spec {
  std::string kind;
  std::string queue = "default";
  /// Attempts of this kind running at once on this node (1-1000).
  std::size_t concurrency = 1;
  /// Exactly one of the two.
  job_handler handle;
  job_tx_handler handle_tx;
};

/// Hooks for metrics (the node implements them with Prometheus). Called on
/// actor threads; keep them cheap.
class job_metrics {
public:
  virtual ~job_metrics() = default;
  /// `n` jobs were enqueued through this node.
  virtual void enqueued(std::size_t n) {
    (void) n;
  }
  /// An attempt ended (`result`: completed, retryable, snoozed, discarded,
  /// lease_lost) after `duration` (negative: unknown).
  virtual void ran(const std::string& queue, const std::string& kind,
                   const char* result, double duration_seconds) {
    (void) queue, (void) kind, (void) result, (void) duration_seconds;
  }
  /// A job waited this long between becoming due and starting.
  virtual void waited(double seconds) {
    (void) seconds;
  }
  /// `n` jobs were taken back from expired leases.
  virtual void rescued(std::size_t n) {
    (void) n;
  }
};

/// Settings of a node's jobs.
struct jobs_config {
  /// Names this node as the worker of the jobs it runs.
  std::string node;
  /// How often the dispatcher looks for due jobs without being woken.
  std::chrono::milliseconds poll{1000};
  /// Leases of in-process attempts; extended every `heartbeat`.
  std::chrono::milliseconds lease{5000};
  std::chrono::milliseconds heartbeat{1000};
  /// How often expired leases are rescued and due jobs promoted; pruning
  /// runs every 60 times that.
  std::chrono::milliseconds maintenance{1000};
  job_retention retention;
  /// Most jobs per fetch.
  std::size_t max_fetch = 500;
  /// Jobs a kind holds beyond its running ones, per worker (0: none): a
  /// worker that finishes takes the next at once instead of waiting for a
  /// fetch. Held jobs are leased and heartbeated like running ones, and
  /// handed back when the node stops.
  std::size_t prefetch = 1;
  /// Outcomes wait at most this long, or until there are `flush_max`, to
  /// go to the database in one statement.
  std::chrono::milliseconds flush{2};
  std::size_t flush_max = 500;
  job_limits limits;
  /// Run triggers on this node.
  bool triggers = true;
  /// Bus credit per trigger.
  std::uint32_t trigger_credit = 4096;
  /// Connections of the pool behind management calls and external workers.
  std::size_t connections = 4;
  /// How long `stop` waits for running attempts.
  std::chrono::milliseconds shutdown_grace{10'000};
};

/// What this node's dispatcher has done since it started.
struct jobs_stats {
  std::uint64_t fetched = 0;
  std::uint64_t completed = 0;
  std::uint64_t failed = 0;
  std::uint64_t lease_lost = 0;
  std::uint64_t rescued = 0;
  std::uint64_t flushes = 0;
  std::uint64_t running = 0;
  std::uint64_t triggers = 0;
  std::uint64_t trigger_jobs = 0;
  /// Final jobs deleted after their retention by this node.
  std::uint64_t pruned = 0;
};

/// The jobs of one node: enqueue, in-process workers, external workers'
/// calls, management and triggers. Thread-safe. Asynchronous calls run
/// `done` once, on another thread; errors are `caf::error`s in the "dcbd"
/// category (invalid_argument, unavailable, ...).
class job_service {
public:
  template <class T>
  using callback = std::function<void(caf::expected<T>)>;

  /// Uses `eng`'s database and bus; `eng` must outlive the service.
  job_service(caf::actor_system& sys, engine& eng, jobs_config cfg,
              std::shared_ptr<job_metrics> metrics = nullptr);
  ~job_service();

  job_service(const job_service&) = delete;
  job_service& operator=(const job_service&) = delete;

  /// Registers in-process workers for `spec.kind`. Throws
  /// `store_error(invalid_argument)` on a bad spec or a kind taken.
  void add_worker(job_worker_spec spec);

  /// Stops fetching, waits up to `shutdown_grace` for running attempts and
  /// applies their outcomes, stops triggers; idempotent.
  void stop();

  /// The SQL layer, e.g. to enqueue inside your own transaction.
  pg_jobs& store();

  const jobs_config& config() const;

  jobs_stats stats() const;

  // -- asynchronous calls ----------------------------------------------------

  void enqueue(std::vector<job_request> jobs,
               callback<std::vector<enqueued_job>> done);
  void get(std::int64_t id, callback<std::optional<job>> done);
  void list(job_filter f, callback<std::vector<job>> done);
  void cancel(std::int64_t id, callback<job_change> done);
  void retry(std::int64_t id, callback<job_change> done);
  void counts(callback<std::vector<queue_counts>> done);

  /// External workers: takes due jobs; when there are none, waits up to
  /// `wait` for some (woken by enqueues on any node).
  void fetch(job_fetch f, std::chrono::milliseconds wait,
             callback<std::vector<job>> done);
  /// External workers: one outcome; nullopt when the lease is not current.
  void finish(job_outcome o, callback<std::optional<job_state>> done);
  /// External workers: extends a lease; false when it is not current.
  void heartbeat(std::int64_t id, std::int64_t lease, std::int64_t lease_ms,
                 callback<bool> done);

  /// Creates a trigger (false: the name is taken); it starts on every node
  /// within `poll`, on this one at once.
  void create_trigger(job_trigger t, std::optional<std::uint64_t> from,
                      callback<bool> done);
  void triggers(callback<std::vector<job_trigger>> done);
  /// False when there was no such trigger.
  void delete_trigger(std::string name, callback<bool> done);

  // -- blocking wrappers (tests, tools); throw store_error -------------------

  std::vector<enqueued_job> enqueue_blocking(std::vector<job_request> jobs);

  /// Internal: what the service's actors share.
  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

} // namespace dcbd
