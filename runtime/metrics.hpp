// The node's Prometheus metrics (DESIGN §4 names). Thread-safe: the store
// actor, the HTTP threads and the scrape thread all use them.
#pragma once

#include "actors/bus_protocol.hpp"
#include "actors/jobs.hpp"
#include "actors/projector.hpp"
#include "actors/store_protocol.hpp"
#include "store/error.hpp"
#include "store/event_cache.hpp"
#include "store/pg_replica.hpp"
#include "store/read_index.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace dcbd {

/// What the console's overview shows (`GET /v1/stats`): the counters as
/// they are now; a client derives rates from two of them.
struct node_stats {
  /// Append requests by result label (see `result_label`).
  std::map<std::string, double> appends;
  double events_appended = 0;
  double reads = 0;
  double events_read = 0;
  double head = 0;
  double subscriptions = 0;
  double deliveries = 0;
  double fell_behind = 0;
  double open_streams = 0;
  double jobs_enqueued = 0;
};

class node_metrics {
public:
  node_metrics();

  const std::shared_ptr<prometheus::Registry>& registry() const {
    return registry_;
  }

  /// Hooks for the store actor (group size and latency, events appended).
  std::shared_ptr<store_metrics> store_hooks();

  /// Hooks for the event bus and its subscribers (API.md §5 names).
  std::shared_ptr<bus_metrics> bus_hooks();

  /// One append request finished with `code` (none on success), after
  /// `latency` end to end.
  void append_finished(errc code, std::chrono::nanoseconds latency);

  /// One read finished with `code`, returning `events`.
  void read_finished(errc code, std::size_t events);

  /// A read below the event cache was answered straight from PostgreSQL on
  /// the I/O threads, or handed to the readers (runtime/database_reads).
  void database_read(bool answered);

  /// One HTTP request on `route` was answered with `status`.
  void http_finished(const std::string& route, unsigned status,
                     std::chrono::nanoseconds latency);

  /// Copies the store actor's counters and the queue depth.
  void store_state(const store_stats& stats, std::size_t gate_depth);

  /// Copies the local projectors' statuses (API.md §6 names): position,
  /// lag, heartbeat age, dead letters, restarts, state.
  void projectors(const std::vector<projector_status>& statuses);

  /// Hooks for the job service (API.md §7 names): enqueued, runs by
  /// result, wait and run time, rescues.
  std::shared_ptr<job_metrics> job_hooks();

  /// Copies the jobs per queue and state (`dcb_jobs{queue,state}`); queues
  /// that are gone drop to 0.
  void jobs(const std::vector<queue_counts>& counts);

  /// Copies the event cache's state and counters and the read index's
  /// (`dcb_cache_*`, `dcb_read_index_*`).
  void cache_state(const cache_snapshot& cache, const read_index_stats& index);

  /// Copies the cluster's membership (`dcb_cluster_members{status}` counts
  /// the peers, not this node; `dcb_cluster_member_up{member}` is 1 or 0
  /// per peer this node knows). Peers no longer known are removed.
  void cluster(const std::vector<std::pair<std::string, bool>>& peers);

  /// One handshake with a peer was refused (other settings, other
  /// cluster, or a name taken).
  void cluster_refused() {
    cluster_refused_->Increment();
  }

  // -- forwarded appends (issue 14 item 4) ------------------------------------

  /// One append this node meant to forward to the cluster's writer ended
  /// with `result`: "acked" (the writer committed it), "rejected" (the
  /// writer answered an error, e.g. a failed condition), "unavailable" (the
  /// link dropped or the answer did not come in time: it may or may not be
  /// committed), or "local" (the writer was not linked or the window was
  /// full: appended on this node). `dcb_appends_forwarded_total{result}`.
  void append_forwarded(const std::string& result);

  /// A batch of `n` appends went to the writer.
  /// `dcb_append_forward_batch_size`.
  void forward_batch(std::size_t n);

  // -- read replicas (issue 14) ----------------------------------------------

  /// Hooks for the readers' standby (store/pg_replica.hpp), registering on
  /// the first call: `dcb_replica_reads_total{served_by, reason}`,
  /// `dcb_replica_lag_positions`, `dcb_replica_replayed_position`,
  /// `dcb_replica_up`. A node without a standby never calls it and
  /// exports none of them.
  std::shared_ptr<replica_metrics> replica_hooks();

  // -- end of read replicas --------------------------------------------------

  /// The counters of the overview (thread-safe).
  node_stats stats() const;

  /// Streams in flight.
  prometheus::Gauge& open_streams() {
    return *open_streams_;
  }

private:
  friend class store_hooks_impl;
  friend class bus_hooks_impl;
  friend class job_hooks_impl;

  std::shared_ptr<prometheus::Registry> registry_;
  std::array<prometheus::Counter*, 6> appends_by_code_{};
  prometheus::Histogram* append_latency_;
  prometheus::Counter* events_appended_;
  prometheus::Histogram* group_requests_;
  prometheus::Histogram* group_latency_;
  std::array<prometheus::Counter*, 6> reads_by_code_{};
  prometheus::Counter* events_read_;
  prometheus::Counter* database_reads_answered_;
  prometheus::Counter* database_reads_declined_;
  prometheus::Family<prometheus::Counter>* http_requests_;
  prometheus::Family<prometheus::Histogram>* http_latency_;
  prometheus::Counter* reconnects_;
  prometheus::Gauge* mailbox_;
  prometheus::Gauge* queue_;
  prometheus::Gauge* open_streams_;
  prometheus::Gauge* head_;
  prometheus::Gauge* subscriptions_;
  prometheus::Counter* delivered_;
  prometheus::Counter* fell_behind_;
  // By bus_feed: store, peer, read.
  prometheus::Counter* bus_fed_[3];
  prometheus::Histogram* commit_to_delivery_;
  prometheus::Family<prometheus::Gauge>* projector_position_;
  prometheus::Family<prometheus::Gauge>* projector_lag_;
  prometheus::Family<prometheus::Gauge>* projector_heartbeat_age_;
  prometheus::Family<prometheus::Gauge>* projector_dead_letters_;
  prometheus::Family<prometheus::Gauge>* projector_state_;
  prometheus::Family<prometheus::Counter>* projector_restarts_;
  prometheus::Family<prometheus::Gauge>* jobs_;
  prometheus::Counter* jobs_enqueued_;
  prometheus::Family<prometheus::Counter>* job_runs_;
  prometheus::Histogram* job_wait_;
  prometheus::Histogram* job_duration_;
  prometheus::Counter* jobs_rescued_;
  prometheus::Gauge* cache_bytes_;
  prometheus::Gauge* cache_events_;
  prometheus::Gauge* cache_lo_;
  prometheus::Gauge* cache_hi_;
  prometheus::Family<prometheus::Counter>* cache_reads_;
  prometheus::Counter* cache_evicted_;
  prometheus::Gauge* cache_summary_bytes_;
  prometheus::Gauge* cache_summary_from_;
  prometheus::Counter* cache_summary_answers_;
  prometheus::Counter* cache_restarts_;
  prometheus::Family<prometheus::Counter>* cache_waits_;
  prometheus::Family<prometheus::Counter>* cache_conditions_;
  prometheus::Counter* index_rounds_;
  prometheus::Counter* index_reads_;
  prometheus::Gauge* index_max_batch_;
  prometheus::Counter* index_lease_reads_;
  prometheus::Gauge* lease_held_;
  prometheus::Counter* lease_acquisitions_;
  prometheus::Counter* lease_losses_;
  prometheus::Family<prometheus::Gauge>* cluster_members_;
  prometheus::Family<prometheus::Gauge>* cluster_member_up_;
  prometheus::Counter* cluster_refused_;
  prometheus::Family<prometheus::Counter>* appends_forwarded_;
  prometheus::Histogram* forward_batch_;
  std::set<std::string> cluster_peers_;
  // -- read replicas (issue 14): made by `replica_hooks` ---------------------
  std::shared_ptr<replica_metrics> replica_hooks_;
  // -- end of read replicas --------------------------------------------------
  std::mutex mtx_;
  double reconnects_seen_ = 0;
  // What `cache_state` has added to each counter so far.
  std::map<prometheus::Counter*, double> cache_seen_;
  std::map<std::string, double> restarts_seen_;
  // Queues `jobs` has exported, so that a queue that empties reads 0.
  std::set<std::string> job_queues_;
};

/// The `result` label of an outcome: ok, conflict, invalid, overloaded,
/// unavailable, internal.
const char* result_label(errc code) noexcept;

} // namespace dcbd
