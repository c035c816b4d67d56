#include "runtime/metrics.hpp"

namespace dcbd {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

constexpr std::array<errc, 6> codes{errc::none,
                                    errc::append_condition_failed,
                                    errc::invalid_argument,
                                    errc::overloaded,
                                    errc::unavailable,
                                    errc::internal};

std::size_t slot(errc code) {
  for (std::size_t i = 0; i < codes.size(); ++i)
    if (codes[i] == code)
      return i;
  return codes.size() - 1;
}

double seconds(std::chrono::nanoseconds d) {
  return std::chrono::duration<double>(d).count();
}

// Job waits and runs: milliseconds to an hour.
const Histogram::BucketBoundaries job_buckets{0.001, 0.005, 0.01, 0.025, 0.05,
                                              0.1,   0.25,  0.5,  1,     2.5,
                                              5,     10,    30,   60,    300,
                                              900,   3600};

const Histogram::BucketBoundaries latency_buckets{
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
  0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};

} // namespace

const char* result_label(errc code) noexcept {
  switch (code) {
    case errc::none:
      return "ok";
    case errc::append_condition_failed:
      return "conflict";
    case errc::invalid_argument:
      return "invalid";
    case errc::overloaded:
      return "overloaded";
    case errc::unavailable:
      return "unavailable";
    case errc::internal:
      return "internal";
  }
  return "internal";
}

class store_hooks_impl : public store_metrics {
public:
  explicit store_hooks_impl(node_metrics& m) : m_(m) {
    // nop
  }

  void group_committed(std::size_t requests, std::size_t events,
                       std::chrono::nanoseconds latency) override {
    m_.group_requests_->Observe(static_cast<double>(requests));
    m_.group_latency_->Observe(seconds(latency));
    m_.events_appended_->Increment(static_cast<double>(events));
  }

  void jobs_enqueued(std::size_t n) override {
    m_.jobs_enqueued_->Increment(static_cast<double>(n));
  }

  void queue_depth(std::size_t depth) override {
    m_.mailbox_->Set(static_cast<double>(depth));
  }

private:
  node_metrics& m_;
};

class bus_hooks_impl : public bus_metrics {
public:
  explicit bus_hooks_impl(node_metrics& m) : m_(m) {
    // nop
  }

  void head(std::uint64_t position) override {
    m_.head_->Set(static_cast<double>(position));
  }

  void subscriptions(std::size_t n) override {
    m_.subscriptions_->Set(static_cast<double>(n));
  }

  void delivered(std::size_t n) override {
    m_.delivered_->Increment(static_cast<double>(n));
  }

  void fell_behind() override {
    m_.fell_behind_->Increment();
  }

  void fed(bus_feed source, std::size_t n) override {
    m_.bus_fed_[static_cast<int>(source)]->Increment(static_cast<double>(n));
  }

  void commit_to_delivery(std::chrono::nanoseconds latency) override {
    m_.commit_to_delivery_->Observe(seconds(latency));
  }

private:
  node_metrics& m_;
};

class job_hooks_impl : public job_metrics {
public:
  explicit job_hooks_impl(node_metrics& m) : m_(m) {
    // nop
  }

  void enqueued(std::size_t n) override {
    m_.jobs_enqueued_->Increment(static_cast<double>(n));
  }

  void ran(const std::string& queue, const std::string& kind,
           const char* result, double duration_seconds) override {
    m_.job_runs_->Add({{"queue", queue}, {"kind", kind}, {"result", result}})
      .Increment();
    if (duration_seconds >= 0)
      m_.job_duration_->Observe(duration_seconds);
  }

  void waited(double seconds) override {
    m_.job_wait_->Observe(seconds > 0 ? seconds : 0);
  }

  void rescued(std::size_t n) override {
    m_.jobs_rescued_->Increment(static_cast<double>(n));
  }

private:
  node_metrics& m_;
};

node_metrics::node_metrics()
  : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  auto& appends = BuildCounter()
                    .Name("dcb_append_requests_total")
                    .Help("Append requests by result")
                    .Register(r);
  auto& reads = BuildCounter()
                  .Name("dcb_read_requests_total")
                  .Help("Read requests by result")
                  .Register(r);
  for (std::size_t i = 0; i < codes.size(); ++i) {
    appends_by_code_[i] = &appends.Add({{"result", result_label(codes[i])}});
    reads_by_code_[i] = &reads.Add({{"result", result_label(codes[i])}});
  }
  append_latency_ = &BuildHistogram()
                       .Name("dcb_append_duration_seconds")
                       .Help("Append latency, request to acknowledgement")
                       .Register(r)
                       .Add({}, latency_buckets);
  events_appended_ = &BuildCounter()
                        .Name("dcb_events_appended_total")
                        .Help("Events appended")
                        .Register(r)
                        .Add({});
  group_requests_ = &BuildHistogram()
                       .Name("dcb_group_size_requests")
                       .Help("Requests per group commit")
                       .Register(r)
                       .Add({}, Histogram::BucketBoundaries{
                                  1, 2, 5, 10, 20, 50, 100, 200, 500, 1000});
  group_latency_ = &BuildHistogram()
                      .Name("dcb_group_commit_duration_seconds")
                      .Help("Duration of one group commit")
                      .Register(r)
                      .Add({}, latency_buckets);
  events_read_ = &BuildCounter()
                    .Name("dcb_events_read_total")
                    .Help("Events returned by reads and streams")
                    .Register(r)
                    .Add({});
  {
    auto& f = BuildCounter()
                .Name("dcb_http_database_reads_total")
                .Help("Reads the event cache could not answer whole, by "
                      "whether one statement on the HTTP threads answered "
                      "them or they went on to the readers")
                .Register(r);
    database_reads_answered_ = &f.Add({{"result", "answered"}});
    database_reads_declined_ = &f.Add({{"result", "declined"}});
  }
  http_requests_ = &BuildCounter()
                      .Name("dcb_http_requests_total")
                      .Help("HTTP requests by route and status code")
                      .Register(r);
  http_latency_ = &BuildHistogram()
                     .Name("dcb_http_request_duration_seconds")
                     .Help("HTTP request latency by route")
                     .Register(r);
  cache_bytes_ = &BuildGauge()
                    .Name("dcb_cache_bytes")
                    .Help("Estimated memory of the event cache")
                    .Register(r)
                    .Add({});
  cache_events_ = &BuildGauge()
                     .Name("dcb_cache_events")
                     .Help("Events in the event cache")
                     .Register(r)
                     .Add({});
  cache_lo_ = &BuildGauge()
                 .Name("dcb_cache_lo")
                 .Help("The cache holds the events after this position")
                 .Register(r)
                 .Add({});
  cache_hi_ = &BuildGauge()
                 .Name("dcb_cache_hi")
                 .Help("The cache holds the events up to this position")
                 .Register(r)
                 .Add({});
  cache_reads_ = &BuildCounter()
                    .Name("dcb_cache_reads_total")
                    .Help("Reads by route (read, stream, project) and result "
                          "(hit: from memory, partial: the part below the "
                          "cache from the database, miss: from the database)")
                    .Register(r);
  cache_summary_bytes_
    = &BuildGauge()
         .Name("dcb_cache_summary_bytes")
         .Help("Memory of the summary of events below the cache (types, a "
               "Bloom filter of tags), within the cache's bound")
         .Register(r)
         .Add({});
  cache_summary_from_
    = &BuildGauge()
         .Name("dcb_cache_summary_from")
         .Help("The summary covers the events after this position up to "
               "dcb_cache_lo (0: the whole log below the cache)")
         .Register(r)
         .Add({});
  cache_restarts_
    = &BuildCounter()
         .Name("dcb_cache_restarts_total")
         .Help("Times the cache was emptied and started again at the head "
               "because the bus skipped past events it did not hold")
         .Register(r)
         .Add({});
  cache_summary_answers_
    = &BuildCounter()
         .Name("dcb_cache_summary_answers_total")
         .Help("Scans starting below the cache answered from memory because "
               "the summary ruled out every match there")
         .Register(r)
         .Add({});
  cache_evicted_ = &BuildCounter()
                      .Name("dcb_cache_evicted_total")
                      .Help("Events dropped from the cache's low end")
                      .Register(r)
                      .Add({});
  cache_conditions_
    = &BuildCounter()
         .Name("dcb_cache_condition_checks_total")
         .Help("Append conditions checked against the cache before the "
               "database: clean (the database looks only past the cache's "
               "head), matched (failed without asking the database) or "
               "missed (the cache did not hold the range)")
         .Register(r);
  cache_waits_ = &BuildCounter()
                    .Name("dcb_cache_waits_total")
                    .Help("Reads that waited for the cache to reach their read "
                          "index, by result (reached, timeout)")
                    .Register(r);
  index_rounds_ = &BuildCounter()
                     .Name("dcb_read_index_rounds_total")
                     .Help("Head queries of the read index")
                     .Register(r)
                     .Add({});
  index_reads_ = &BuildCounter()
                    .Name("dcb_read_index_reads_total")
                    .Help("Reads the read index served (divided by rounds: the "
                          "batch size)")
                    .Register(r)
                    .Add({});
  index_lease_reads_ = &BuildCounter()
                          .Name("dcb_read_index_lease_reads_total")
                          .Help("Reads the read lease served without a head "
                                "query")
                          .Register(r)
                          .Add({});
  lease_held_ = &BuildGauge()
                   .Name("dcb_read_lease_held")
                   .Help("1 while this node holds the read lease")
                   .Register(r)
                   .Add({});
  lease_acquisitions_ = &BuildCounter()
                           .Name("dcb_read_lease_acquisitions_total")
                           .Help("Times the read lease was taken")
                           .Register(r)
                           .Add({});
  lease_losses_ = &BuildCounter()
                     .Name("dcb_read_lease_losses_total")
                     .Help("Times another writer's commit ended the read "
                           "lease")
                     .Register(r)
                     .Add({});
  index_max_batch_ = &BuildGauge()
                        .Name("dcb_read_index_max_batch")
                        .Help("The most reads one head query served")
                        .Register(r)
                        .Add({});
  reconnects_ = &BuildCounter()
                   .Name("dcb_store_reconnects_total")
                   .Help("Store connections reopened")
                   .Register(r)
                   .Add({});
  mailbox_ = &BuildGauge()
                .Name("dcb_store_mailbox_depth")
                .Help("Messages waiting for the store actor")
                .Register(r)
                .Add({});
  queue_ = &BuildGauge()
              .Name("dcb_store_queue_depth")
              .Help("Appends admitted and not yet answered")
              .Register(r)
              .Add({});
  projector_position_
    = &BuildGauge()
         .Name("dcb_projector_position")
         .Help("Every matching event at or below it is applied (checkpoint)")
         .Register(r);
  projector_lag_
    = &BuildGauge()
         .Name("dcb_projector_lag_events")
         .Help("Events between a projector's position and the head")
         .Register(r);
  projector_heartbeat_age_
    = &BuildGauge()
         .Name("dcb_projector_heartbeat_age_seconds")
         .Help("Time since a projector last showed progress or health; grows "
               "when it is stuck, even at zero lag")
         .Register(r);
  projector_dead_letters_ = &BuildGauge()
                               .Name("dcb_projector_dead_letters")
                               .Help("Events a projector parked")
                               .Register(r);
  projector_state_
    = &BuildGauge()
         .Name("dcb_projector_state")
         .Help("1 for a projector's current state on this node (running, "
               "paused, standby, failed, rebuilding)")
         .Register(r);
  projector_restarts_
    = &BuildCounter()
         .Name("dcb_projector_restarts_total")
         .Help("Projector instances started again after one died")
         .Register(r);
  open_streams_ = &BuildGauge()
                     .Name("dcb_http_open_streams")
                     .Help("Streaming reads in flight")
                     .Register(r)
                     .Add({});
  head_ = &BuildGauge()
             .Name("dcb_head_position")
             .Help("The last position the node's event bus has applied")
             .Register(r)
             .Add({});
  subscriptions_ = &BuildGauge()
                      .Name("dcb_subscriptions")
                      .Help("Live subscriptions open on the node")
                      .Register(r)
                      .Add({});
  delivered_ = &BuildCounter()
                  .Name("dcb_subscription_events_delivered_total")
                  .Help("Events handed to subscribers")
                  .Register(r)
                  .Add({});
  fell_behind_ = &BuildCounter()
                    .Name("dcb_subscription_fell_behind_total")
                    .Help("Times a subscriber's queue was full and it went "
                          "back to catch-up reads")
                    .Register(r)
                    .Add({});
  auto& fed = BuildCounter()
                .Name("dcb_bus_events_fed_total")
                .Help("Events the node's event bus applied, by where it took "
                      "them from: the node's own commits (store), a peer's "
                      "announcement (peer) or a read of the database (read)")
                .Register(r);
  bus_fed_[0] = &fed.Add({{"source", "store"}});
  bus_fed_[1] = &fed.Add({{"source", "peer"}});
  bus_fed_[2] = &fed.Add({{"source", "read"}});
  commit_to_delivery_ = &BuildHistogram()
                           .Name("dcb_commit_to_delivery_seconds")
                           .Help("From the commit of a live event to its "
                                 "delivery (written to the client)")
                           .Register(r)
                           .Add({}, latency_buckets);
  cluster_members_ = &BuildGauge()
                        .Name("dcb_cluster_members")
                        .Help("Peers of this node by status (up: linked "
                              "over the middleman; unreachable: known, "
                              "link down)")
                        .Register(r);
  cluster_members_->Add({{"status", "up"}}).Set(0);
  cluster_members_->Add({{"status", "unreachable"}}).Set(0);
  cluster_member_up_ = &BuildGauge()
                          .Name("dcb_cluster_member_up")
                          .Help("1 while the link to a peer is up, 0 while "
                                "it is unreachable")
                          .Register(r);
  cluster_refused_ = &BuildCounter()
                        .Name("dcb_cluster_handshakes_refused_total")
                        .Help("Handshakes refused (other middleman settings, "
                              "other cluster, or a node name taken)")
                        .Register(r)
                        .Add({});
  appends_forwarded_ = &BuildCounter()
                          .Name("dcb_appends_forwarded_total")
                          .Help("Appends this node meant to forward to the "
                                "cluster's writer, by result (acked, "
                                "rejected, unavailable, local)")
                          .Register(r);
  for (auto result : {"acked", "rejected", "unavailable", "local"})
    appends_forwarded_->Add({{"result", result}});
  forward_batch_ = &BuildHistogram()
                      .Name("dcb_append_forward_batch_size")
                      .Help("Appends per batch this node forwarded to the "
                            "cluster's writer")
                      .Register(r)
                      .Add({}, Histogram::BucketBoundaries{1, 2, 5, 10, 20, 50,
                                                           100, 200, 500});
  jobs_ = &BuildGauge()
             .Name("dcb_jobs")
             .Help("Jobs by queue and state (all nodes' jobs, read from the "
                   "database at most once a second)")
             .Register(r);
  jobs_enqueued_ = &BuildCounter()
                      .Name("dcb_jobs_enqueued_total")
                      .Help("Jobs enqueued through this node (duplicates of "
                            "a live unique_key not counted)")
                      .Register(r)
                      .Add({});
  job_runs_ = &BuildCounter()
                 .Name("dcb_job_runs_total")
                 .Help("Attempts that ended on this node, by queue, kind "
                       "and result (completed, retryable, snoozed, "
                       "discarded, lease_lost)")
                 .Register(r);
  job_wait_ = &BuildHistogram()
                 .Name("dcb_job_wait_seconds")
                 .Help("From when a job was due to when its attempt started")
                 .Register(r)
                 .Add({}, job_buckets);
  job_duration_ = &BuildHistogram()
                     .Name("dcb_job_duration_seconds")
                     .Help("How long an attempt ran")
                     .Register(r)
                     .Add({}, job_buckets);
  jobs_rescued_ = &BuildCounter()
                     .Name("dcb_job_rescued_total")
                     .Help("Running jobs taken back from expired leases by "
                           "this node's maintenance")
                     .Register(r)
                     .Add({});
}

std::shared_ptr<store_metrics> node_metrics::store_hooks() {
  return std::make_shared<store_hooks_impl>(*this);
}

std::shared_ptr<bus_metrics> node_metrics::bus_hooks() {
  return std::make_shared<bus_hooks_impl>(*this);
}

std::shared_ptr<job_metrics> node_metrics::job_hooks() {
  return std::make_shared<job_hooks_impl>(*this);
}

void node_metrics::append_finished(errc code,
                                   std::chrono::nanoseconds latency) {
  appends_by_code_[slot(code)]->Increment();
  append_latency_->Observe(seconds(latency));
}

node_stats node_metrics::stats() const {
  node_stats s;
  for (auto code : codes) {
    s.appends[result_label(code)] = appends_by_code_[slot(code)]->Value();
    s.reads += reads_by_code_[slot(code)]->Value();
  }
  s.events_appended = events_appended_->Value();
  s.events_read = events_read_->Value();
  s.head = head_->Value();
  s.subscriptions = subscriptions_->Value();
  s.deliveries = delivered_->Value();
  s.fell_behind = fell_behind_->Value();
  s.open_streams = open_streams_->Value();
  s.jobs_enqueued = jobs_enqueued_->Value();
  return s;
}

void node_metrics::read_finished(errc code, std::size_t events) {
  reads_by_code_[slot(code)]->Increment();
  events_read_->Increment(static_cast<double>(events));
}

void node_metrics::database_read(bool answered) {
  (answered ? database_reads_answered_ : database_reads_declined_)->Increment();
}

void node_metrics::http_finished(const std::string& route, unsigned status,
                                 std::chrono::nanoseconds latency) {
  http_requests_->Add({{"route", route}, {"code", std::to_string(status)}})
    .Increment();
  http_latency_->Add({{"route", route}}, latency_buckets)
    .Observe(seconds(latency));
}

void node_metrics::store_state(const store_stats& stats,
                               std::size_t gate_depth) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto now = static_cast<double>(stats.reconnects);
  if (now > reconnects_seen_) {
    reconnects_->Increment(now - reconnects_seen_);
    reconnects_seen_ = now;
  }
  mailbox_->Set(static_cast<double>(stats.mailbox));
  queue_->Set(static_cast<double>(gate_depth));
}

void node_metrics::cache_state(const cache_snapshot& cache,
                               const read_index_stats& index) {
  std::lock_guard<std::mutex> guard{mtx_};
  // Counters only grow: add what is new since the last copy.
  auto raise = [this](prometheus::Counter& c, std::uint64_t total) {
    auto& seen = cache_seen_[&c];
    auto now = static_cast<double>(total);
    if (now > seen) {
      c.Increment(now - seen);
      seen = now;
    }
  };
  cache_bytes_->Set(static_cast<double>(cache.bytes));
  cache_events_->Set(static_cast<double>(cache.events));
  cache_lo_->Set(static_cast<double>(cache.lo));
  cache_hi_->Set(static_cast<double>(cache.hi));
  for (auto r : {cache_route::read, cache_route::stream, cache_route::project})
    for (auto o :
         {cache_outcome::hit, cache_outcome::partial, cache_outcome::miss})
      raise(
        cache_reads_->Add({{"route", to_string(r)}, {"result", to_string(o)}}),
        cache.served[static_cast<int>(r)][static_cast<int>(o)]);
  raise(*cache_evicted_, cache.evicted);
  cache_summary_bytes_->Set(static_cast<double>(cache.summary_bytes));
  cache_summary_from_->Set(static_cast<double>(cache.summary_from));
  raise(*cache_summary_answers_, cache.summary_answers);
  raise(*cache_restarts_, cache.restarts);
  raise(cache_waits_->Add({{"result", "reached"}}),
        cache.waits - cache.wait_timeouts);
  raise(cache_waits_->Add({{"result", "timeout"}}), cache.wait_timeouts);
  raise(cache_conditions_->Add({{"result", "clean"}}), cache.conditions_clean);
  raise(cache_conditions_->Add({{"result", "matched"}}),
        cache.conditions_matched);
  raise(cache_conditions_->Add({{"result", "missed"}}),
        cache.conditions_missed);
  raise(*index_rounds_, index.rounds);
  raise(*index_reads_, index.reads);
  index_max_batch_->Set(static_cast<double>(index.max_batch));
  raise(*index_lease_reads_, index.lease_reads);
  raise(*lease_acquisitions_, index.lease_acquisitions);
  raise(*lease_losses_, index.lease_losses);
  lease_held_->Set(index.lease_held ? 1.0 : 0.0);
}

void node_metrics::projectors(const std::vector<projector_status>& statuses) {
  static constexpr projector_state states[] = {
    projector_state::running, projector_state::paused, projector_state::standby,
    projector_state::failed, projector_state::rebuilding};
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& s : statuses) {
    prometheus::Labels l{{"projector", s.name}};
    // Position, lag, dead letters and heartbeat are the running instance's:
    // a node that stands by exports none (the owner does), so a sum or max
    // over the cluster's nodes is the projector's.
    if (s.state == projector_state::standby) {
      for (auto* f : {projector_position_, projector_lag_,
                      projector_dead_letters_, projector_heartbeat_age_})
        if (f->Has(l))
          f->Remove(&f->Add(l));
    } else {
      projector_position_->Add(l).Set(static_cast<double>(s.position));
      projector_lag_->Add(l).Set(static_cast<double>(s.lag));
      projector_dead_letters_->Add(l).Set(static_cast<double>(s.dead_letters));
      double age = 0;
      if (s.heartbeat != std::chrono::steady_clock::time_point{})
        age = std::chrono::duration<double>(now - s.heartbeat).count();
      projector_heartbeat_age_->Add(l).Set(age);
    }
    for (auto st : states)
      projector_state_->Add({{"projector", s.name}, {"state", to_string(st)}})
        .Set(st == s.state ? 1 : 0);
    auto& seen = restarts_seen_[s.name];
    auto& c = projector_restarts_->Add(l);
    if (static_cast<double>(s.restarts) > seen) {
      c.Increment(static_cast<double>(s.restarts) - seen);
      seen = static_cast<double>(s.restarts);
    }
  }
}

void node_metrics::jobs(const std::vector<queue_counts>& counts) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto gone = job_queues_;
  for (auto& c : counts) {
    gone.erase(c.queue);
    job_queues_.insert(c.queue);
    for (std::size_t i = 0; i < std::size(all_job_states); ++i)
      jobs_->Add({{"queue", c.queue}, {"state", to_string(all_job_states[i])}})
        .Set(static_cast<double>(c.by_state[i]));
  }
  for (auto& q : gone)
    for (auto st : all_job_states)
      jobs_->Add({{"queue", q}, {"state", to_string(st)}}).Set(0);
}

void node_metrics::cluster(
  const std::vector<std::pair<std::string, bool>>& peers) {
  std::lock_guard<std::mutex> guard{mtx_};
  double up = 0;
  double down = 0;
  auto gone = cluster_peers_;
  for (auto& [name, is_up] : peers) {
    gone.erase(name);
    cluster_peers_.insert(name);
    (is_up ? up : down) += 1;
    cluster_member_up_->Add({{"member", name}}).Set(is_up ? 1 : 0);
  }
  for (auto& name : gone) {
    cluster_peers_.erase(name);
    cluster_member_up_->Remove(&cluster_member_up_->Add({{"member", name}}));
  }
  cluster_members_->Add({{"status", "up"}}).Set(up);
  cluster_members_->Add({{"status", "unreachable"}}).Set(down);
}

// -- forwarded appends --------------------------------------------------------

void node_metrics::append_forwarded(const std::string& result) {
  appends_forwarded_->Add({{"result", result}}).Increment();
}

void node_metrics::forward_batch(std::size_t n) {
  forward_batch_->Observe(static_cast<double>(n));
}

// -- read replicas (issue 14) ------------------------------------------------

namespace {

// The standby's series, registered once per node by `replica_hooks`.
class replica_hooks_impl final : public replica_metrics {
public:
  explicit replica_hooks_impl(prometheus::Registry& r) {
    auto& reads = BuildCounter()
                    .Name("dcb_replica_reads_total")
                    .Help("Reads, streams and decision models by where they "
                          "were served (replica: the standby had replayed "
                          "the head the read must see; primary: it lagged "
                          "past the wait, was down or failed, or the head "
                          "was unknown) and why")
                    .Register(r);
    for (std::size_t i = 0; i < replica_routes; ++i) {
      auto route = static_cast<replica_route>(i);
      reads_[i] = &reads.Add(
        {{"served_by", served_by(route)}, {"reason", reason_of(route)}});
    }
    lag_ = &BuildGauge()
              .Name("dcb_replica_lag_positions")
              .Help("How many positions the standby's replayed head was "
                    "behind the head a read needed, at the last look "
                    "(0: caught up)")
              .Register(r)
              .Add({});
    replayed_ = &BuildGauge()
                   .Name("dcb_replica_replayed_position")
                   .Help("The standby's replayed head at the last look")
                   .Register(r)
                   .Add({});
    up_ = &BuildGauge()
             .Name("dcb_replica_up")
             .Help("1 while the standby answers, 0 while reads leave it "
                   "alone after a failure (they go to the primary)")
             .Register(r)
             .Add({});
    up_->Set(1);
  }

  void routed(replica_route r) override {
    reads_[static_cast<std::size_t>(r)]->Increment();
  }

  void replay(std::uint64_t replayed, std::uint64_t lag) override {
    replayed_->Set(static_cast<double>(replayed));
    lag_->Set(static_cast<double>(lag));
  }

  void up(bool up) override {
    up_->Set(up ? 1 : 0);
  }

private:
  std::array<prometheus::Counter*, replica_routes> reads_{};
  prometheus::Gauge* lag_;
  prometheus::Gauge* replayed_;
  prometheus::Gauge* up_;
};

} // namespace

std::shared_ptr<replica_metrics> node_metrics::replica_hooks() {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!replica_hooks_)
    replica_hooks_ = std::make_shared<replica_hooks_impl>(*registry_);
  return replica_hooks_;
}

// -- end of read replicas -----------------------------------------------------

} // namespace dcbd
