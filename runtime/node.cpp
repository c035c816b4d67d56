// The node: the environment names the database, the addresses and the
// node (the stable contract for containers); everything else comes from
// CAF's config file (caf-application.ini) and command line, group "dcbd"
// (`dcbd --long-help` lists them with their defaults).
#include "runtime/node.hpp"

#include "actors/cluster.hpp"
#include "actors/engine.hpp"
#include "actors/jobs.hpp"
#include "actors/projector.hpp"
#include "actors/types.hpp"
#include "runtime/command_registry.hpp"
#include "runtime/metrics.hpp"
#include "store/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <prometheus/exposer.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace dcbd {

namespace {

// The HTTP I/O threads for `--dcbd.http-threads=n`: n, or for 0 half the
// cores (at least one). The PostgreSQL server, the actors and the clients
// need the rest: on two cores one I/O thread answered about a quarter more
// reads from the cache than two (fewer thread hand-offs), and as many
// appends.
std::size_t http_threads_for(std::size_t n) {
  if (n > 0)
    return n;
  return std::max<std::size_t>(std::thread::hardware_concurrency() / 2, 1);
}

struct node_config : caf::actor_system_config {
  std::size_t readers = 4;
  std::size_t reader_connections = 1;
  std::size_t appenders = 2;
  std::size_t group_max_requests = 1000;
  std::size_t group_max_events = 20'000;
  std::size_t group_max_bytes = std::size_t{16} << 20;
  std::size_t max_queue = 10'000;
  std::size_t max_read_events = 10'000;
  std::size_t max_attempts = 10;
  std::size_t timeout_ms = 30'000;
  std::size_t connect_timeout_ms = 5'000;
  // 0: half the cores, at least one (see `http_threads_for`).
  std::size_t http_threads = 0;
  std::size_t max_body = std::size_t{16} << 20;
  std::size_t request_timeout_ms = 10'000;
  std::size_t idle_timeout_ms = 60'000;
  std::size_t max_streams = 32;
  std::size_t http_read_connections = 4;
  std::size_t shutdown_grace_ms = 30'000;
  std::size_t max_subscriptions = 1000;
  std::size_t subscribe_heartbeat_ms = 15'000;
  std::size_t bus_poll_ms = 500;
  std::size_t bus_queue_events = 2048;
  std::size_t bus_recent_bytes = std::size_t{64} << 20;
  std::size_t cache_bytes = std::size_t{256} << 20;
  std::size_t cache_wait_ms = 50;
  std::size_t read_lease_ms = 0;
  std::size_t read_lease_quiet_ms = 5000;
  std::size_t jobs_poll_ms = 1000;
  std::size_t jobs_lease_ms = 5000;
  std::size_t jobs_shutdown_grace_ms = 10'000;
  std::size_t jobs_retention_completed_s = 24 * 3600;
  std::size_t jobs_retention_discarded_s = 7 * 24 * 3600;
  std::string cluster_writer;
  std::size_t forward_window = 256;
  std::size_t forward_batches = 2;
  std::size_t bus_feed_grace_ms = 10;
  // Read replica (DCB_POSTGRES_READ_DSN).
  std::size_t replica_wait_ms = 20;

  node_config() {
    opt_group{custom_options_, "dcbd"}
      .add(readers, "readers", "reader actors (each has its own connections)")
      .add(reader_connections, "reader-connections", "connections per reader")
      .add(appenders, "appenders", "appender actors")
      .add(group_max_requests, "group-max-requests", "requests per group")
      .add(group_max_events, "group-max-events", "events per group")
      .add(group_max_bytes, "group-max-bytes", "payload bytes per group")
      .add(max_queue, "max-queue",
           "appends admitted and unanswered; past it: overloaded")
      .add(max_read_events, "max-read-events",
           "largest result of a non-streaming read")
      .add(max_attempts, "max-attempts", "attempts per command")
      .add(timeout_ms, "timeout-ms", "timeout of one call inside the node")
      .add(connect_timeout_ms, "connect-timeout-ms",
           "how long to retry opening a database connection")
      .add(http_threads, "http-threads", "HTTP I/O threads (0: half the cores)")
      .add(max_body, "max-body", "largest request body in bytes (else 413)")
      .add(request_timeout_ms, "request-timeout-ms",
           "time to receive a request once its header arrived")
      .add(idle_timeout_ms, "idle-timeout-ms",
           "keep-alive idle time and time to receive a header")
      .add(max_streams, "max-streams",
           "streaming reads at once (more wait in line, then 503)")
      .add(http_read_connections, "http-read-connections",
           "database connections of the HTTP threads for reads the event "
           "cache cannot answer (0: the readers answer them)")
      .add(shutdown_grace_ms, "shutdown-grace-ms",
           "how long a stop waits for requests in flight")
      .add(max_subscriptions, "max-subscriptions",
           "live subscriptions at once (else 503)")
      .add(subscribe_heartbeat_ms, "subscribe-heartbeat-ms",
           "a heartbeat on every subscription this often, busy or idle "
           "(0: none)")
      .add(bus_poll_ms, "bus-poll-ms",
           "how often the bus looks for commits of other processes besides "
           "NOTIFY (10 to 1000)")
      .add(bus_queue_events, "bus-queue-events",
           "events queued per subscriber before it falls back to reads")
      .add(bus_recent_bytes, "bus-recent-bytes",
           "payload bytes of recent events the bus keeps for subscribers "
           "that catch up")
      .add(cache_bytes, "cache-bytes",
           "memory for the most recent events, which serve reads (0: off)")
      .add(cache_wait_ms, "cache-wait-ms",
           "how long a read waits for the cache to catch up with the "
           "database before it reads the database")
      .add(read_lease_ms, "read-lease-ms",
           "term of the read lease, which spares this node's reads a query "
           "while no other process writes (0: off; see README)")
      .add(read_lease_quiet_ms, "read-lease-quiet-ms",
           "how long no other process must have written before the read "
           "lease is taken")
      .add(jobs_poll_ms, "jobs-poll-ms",
           "how often the job dispatcher looks for due jobs besides NOTIFY")
      .add(jobs_lease_ms, "jobs-lease-ms",
           "lease of an in-process job attempt (extended while it runs); a "
           "dead node's jobs run again after it")
      .add(jobs_shutdown_grace_ms, "jobs-shutdown-grace-ms",
           "how long a stop waits for running in-process job attempts")
      .add(jobs_retention_completed_s, "jobs-retention-completed-s",
           "completed and cancelled jobs are deleted after this long")
      .add(jobs_retention_discarded_s, "jobs-retention-discarded-s",
           "discarded jobs are deleted after this long")
      .add(cluster_writer, "cluster-writer",
           "in a cluster: the node whose store actor commits this node's "
           "appends while it is linked (empty: append locally)")
      .add(forward_window, "forward-window",
           "forwarded appends waiting or in flight to the writer, at most "
           "(past it: append locally)")
      .add(forward_batches, "forward-batches",
           "batches of forwarded appends in flight to the writer, at most "
           "(what arrives meanwhile goes in the next batch)")
      .add(bus_feed_grace_ms, "bus-feed-grace-ms",
           "in a cluster: how long the bus waits for a peer's announcement "
           "of a commit before it reads the commit from the database");
    // Read replica (DCB_POSTGRES_READ_DSN).
    opt_group{custom_options_, "dcbd"}.add(
      replica_wait_ms, "replica-wait-ms",
      "how long a read waits for the read replica to replay the head it "
      "must see before it reads the primary");
  }

  // For `node_options::configure`.
  caf::config_option_set& options() {
    return custom_options_;
  }
};

std::string env_or(const char* name, std::string fallback) {
  auto v = std::getenv(name);
  return v && *v ? std::string{v} : fallback;
}

// "<hostname>-<pid>", the default node name.
std::string default_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || !*host)
    return "dcbd-" + std::to_string(::getpid());
  return std::string{host} + "-" + std::to_string(::getpid());
}

// "host:port" or "[v6]:port".
bool split_address(const std::string& addr, std::string& host,
                   std::uint16_t& port) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == addr.size())
    return false;
  host = addr.substr(0, colon);
  if (host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  try {
    std::size_t used = 0;
    auto p = std::stoul(addr.substr(colon + 1), &used);
    if (used != addr.size() - colon - 1 || p > 65535)
      return false;
    port = static_cast<std::uint16_t>(p);
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

int fail(const std::string& message) {
  std::cerr << "dcbd: " << message << std::endl;
  return 2;
}

// What an exception from user code says.
std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is no std::exception";
  }
}

} // namespace

// -- node ---------------------------------------------------------------------

struct node::impl {
  node_config& cfg;
  caf::actor_system& sys;
  dcbd::engine& eng;
  projector_host& projectors;
  job_service& jobs;
  cluster_service* cluster;
  std::shared_ptr<node_metrics> metrics;
  std::string name;
  std::string schema;
  std::string dsn;
  http_config http;
  // The thread that waits for the signals (`node::stop` wakes it).
  pthread_t waiter;

  // Until the server starts.
  bool setting_up = true;
  std::vector<http::route_source> routes{};

  command_registry commands{};

  std::mutex mtx{};
  bool stopping = false;
  std::vector<std::function<void()>> stop_hooks{};

  std::atomic<bool> stop_requested{false};
  std::atomic<int> exit_code{0};

  // Runs the stop hooks, newest first; once.
  void run_stop_hooks() {
    std::vector<std::function<void()>> hooks;
    {
      std::lock_guard guard{mtx};
      stopping = true;
      hooks.swap(stop_hooks);
    }
    for (auto i = hooks.rbegin(); i != hooks.rend(); ++i) {
      try {
        (*i)();
      } catch (...) {
        std::cerr << "dcbd: a stop hook failed: "
                  << what_of(std::current_exception()) << std::endl;
      }
    }
  }
};

caf::actor_system& node::system() {
  return impl_.sys;
}

engine& node::engine() {
  return impl_.eng;
}

projector_host& node::projectors() {
  return impl_.projectors;
}

command_registry& node::commands() {
  return impl_.commands;
}

job_service& node::jobs() {
  return impl_.jobs;
}

cluster_service* node::cluster() {
  return impl_.cluster;
}

std::shared_ptr<node_metrics> node::metrics() const {
  return impl_.metrics;
}

const std::string& node::name() const {
  return impl_.name;
}

const std::string& node::schema() const {
  return impl_.schema;
}

const std::string& node::dsn() const {
  return impl_.dsn;
}

const caf::actor_system_config& node::config() const {
  return impl_.cfg;
}

const http_config& node::http_settings() const {
  return impl_.http;
}

void node::add_routes(http::route_source source) {
  if (!impl_.setting_up)
    throw std::logic_error("dcbd: routes can only be added during setup");
  impl_.routes.push_back(std::move(source));
}

void node::on_stop(std::function<void()> hook) {
  std::lock_guard guard{impl_.mtx};
  if (impl_.stopping)
    throw std::logic_error("dcbd: the node is stopping; too late for a hook");
  impl_.stop_hooks.push_back(std::move(hook));
}

void node::stop(int exit_code) {
  if (impl_.stop_requested.exchange(true))
    return;
  impl_.exit_code = exit_code;
  // Blocked in that thread: pending until its sigwait takes it.
  pthread_kill(impl_.waiter, SIGTERM);
}

// -- run_node -----------------------------------------------------------------

int run_node(int argc, char** argv, node_options options) {
  // Signals are taken by sigwait below; every thread started from here on
  // inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  node_config cfg;
  register_types(cfg);
  tune_scheduler(cfg);
  if (options.configure) {
    try {
      options.configure(cfg, cfg.options());
    } catch (...) {
      return fail("setup failed: " + what_of(std::current_exception()));
    }
  }
  // The cluster's middleman settings go in before the command line, which
  // may override them (alike on every node: the handshake checks).
  auto cluster_addr = env_or("DCB_CLUSTER_ADDR", "");
  auto cluster_name = env_or("DCB_CLUSTER_NAME", "dcbd");
  if (!cluster_addr.empty())
    configure_cluster(cfg, cluster_name);
  if (auto err = cfg.parse(argc, argv))
    return fail("bad configuration: " + cfg.render(err));
  if (cfg.cli_helptext_printed)
    return 0;

  auto dsn = env_or("DCB_POSTGRES_DSN", "");
  if (dsn.empty())
    return fail("DCB_POSTGRES_DSN is not set (a libpq connection string, "
                "e.g. \"host=127.0.0.1 port=5432 user=postgres\")");
  auto http_addr = env_or("DCB_HTTP_ADDR", "127.0.0.1:8080");
  auto metrics_addr = env_or("DCB_METRICS_ADDR", "127.0.0.1:9464");
  auto name = env_or("DCB_NODE_NAME", default_name());
  std::optional<cluster_config> cc;
  if (!cluster_addr.empty()) {
    cc.emplace();
    auto addr = parse_cluster_address(cluster_addr);
    if (!addr)
      return fail("DCB_CLUSTER_ADDR must be host:port, got \"" + cluster_addr
                  + "\"");
    auto seeds = parse_cluster_seeds(env_or("DCB_CLUSTER_SEEDS", ""));
    if (!seeds)
      return fail("DCB_CLUSTER_SEEDS must be a comma-separated list of "
                  "host:port, got \""
                  + env_or("DCB_CLUSTER_SEEDS", "") + "\"");
    if (auto why = check_cluster_settings(cfg))
      return fail(*why);
    cc->node = name;
    cc->addr = *addr;
    cc->seeds = std::move(*seeds);
    // What peers, `/v1/cluster` and the console show as this node's HTTP
    // address: the listening one unless it is told otherwise (a container
    // listens on 0.0.0.0:8080 and is reached at a published port).
    cc->http = env_or("DCB_HTTP_ADVERTISE", http_addr);
    cc->cluster_name = cluster_name;
    cc->writer = cfg.cluster_writer;
    cc->forward_window = std::max<std::size_t>(cfg.forward_window, 1);
    cc->forward_batches = std::max<std::size_t>(cfg.forward_batches, 1);
    cc->forward_timeout = std::chrono::milliseconds(cfg.timeout_ms);
  } else if (!cfg.cluster_writer.empty()) {
    return fail("dcbd.cluster-writer needs a cluster (DCB_CLUSTER_ADDR)");
  } else if (!env_or("DCB_CLUSTER_SEEDS", "").empty()) {
    return fail("DCB_CLUSTER_SEEDS needs DCB_CLUSTER_ADDR (where this node "
                "listens for its peers)");
  }
  http_config hc;
  if (!split_address(http_addr, hc.address, hc.port))
    return fail("DCB_HTTP_ADDR must be host:port, got \"" + http_addr + "\"");
  std::string metrics_host;
  std::uint16_t metrics_port = 0;
  if (!split_address(metrics_addr, metrics_host, metrics_port))
    return fail("DCB_METRICS_ADDR must be host:port, got \"" + metrics_addr
                + "\"");
  hc.threads = http_threads_for(cfg.http_threads);
  hc.max_body = cfg.max_body;
  hc.request_timeout = std::chrono::milliseconds(cfg.request_timeout_ms);
  hc.idle_timeout = std::chrono::milliseconds(cfg.idle_timeout_ms);
  hc.max_streams = cfg.max_streams;
  hc.max_subscriptions = cfg.max_subscriptions;
  hc.subscribe_heartbeat
    = std::chrono::milliseconds(cfg.subscribe_heartbeat_ms);
  hc.read_index_dsn = dsn;
  hc.read_index_schema = env_or("DCB_SCHEMA", "dcb");
  // With a read replica, reads that miss the cache go to it (the readers).
  hc.read_connections = env_or("DCB_POSTGRES_READ_DSN", "").empty()
                          ? cfg.http_read_connections
                          : 0;

  engine_config ec;
  ec.store.dsn = dsn;
  ec.store.schema = env_or("DCB_SCHEMA", "dcb");
  ec.store.connect_timeout = std::chrono::milliseconds(cfg.connect_timeout_ms);
  ec.readers = cfg.readers;
  ec.reader_connections = cfg.reader_connections;
  ec.appenders = cfg.appenders;
  ec.group.max_requests = cfg.group_max_requests;
  ec.group.max_events = cfg.group_max_events;
  ec.group.max_bytes = cfg.group_max_bytes;
  ec.group.max_queue = cfg.max_queue;
  ec.reader.max_read_events = cfg.max_read_events;
  ec.max_attempts = static_cast<std::uint32_t>(cfg.max_attempts);
  ec.timeout = std::chrono::milliseconds(cfg.timeout_ms);
  auto metrics = std::make_shared<node_metrics>();
  ec.metrics = metrics->store_hooks();
  ec.bus.metrics = metrics->bus_hooks();
  ec.bus.poll = std::chrono::milliseconds(
    std::clamp<std::size_t>(cfg.bus_poll_ms, 10, 1000));
  ec.bus.queue_events = cfg.bus_queue_events;
  ec.bus.recent_bytes = cfg.bus_recent_bytes;
  // In a cluster the peers announce their commits to the bus
  // (cluster_service::share_commits): a gap waits a little for them.
  if (cc)
    ec.bus.feed_grace = std::chrono::milliseconds(cfg.bus_feed_grace_ms);
  ec.cache_bytes = cfg.cache_bytes;
  ec.cache_wait = std::chrono::milliseconds(cfg.cache_wait_ms);
  ec.read_lease = std::chrono::milliseconds(cfg.read_lease_ms);
  ec.read_lease_quiet = std::chrono::milliseconds(cfg.read_lease_quiet_ms);
  // Read replica: a streaming-replication standby for the readers.
  ec.replica.dsn = env_or("DCB_POSTGRES_READ_DSN", "");
  ec.replica.wait = std::chrono::milliseconds(cfg.replica_wait_ms);
  if (!ec.replica.dsn.empty()) {
    ec.replica.metrics = metrics->replica_hooks();
    std::cout << "dcbd: reads go to the standby of DCB_POSTGRES_READ_DSN when "
                 "it has replayed what they must see (waiting up to "
              << cfg.replica_wait_ms << " ms), else to the primary"
              << std::endl;
  }

  std::cout << "dcbd: node " << name << ", schema " << ec.store.schema
            << ", readers " << ec.readers << " x " << ec.reader_connections
            << " connections, appenders " << ec.appenders
            << ", groups of <= " << ec.group.max_requests << " requests / "
            << ec.group.max_events << " events, queue " << ec.group.max_queue
            << ", http threads " << hc.threads << ", max body " << hc.max_body
            << " bytes" << std::endl;

  caf::actor_system sys{cfg};
  std::optional<engine> eng;
  try {
    eng.emplace(sys, ec);
  } catch (const std::exception& e) {
    return fail(std::string{"cannot open the store: "} + e.what());
  }

  // The projector host exists in every node: without projectors it opens
  // no lock session and serves the projectors of other nodes as standby.
  // It stops before the stop hooks and the engine.
  std::optional<projector_host> projectors;
  try {
    projector_host_config pc;
    pc.node = name;
    projectors.emplace(sys, *eng, pc);
  } catch (const std::exception& e) {
    return fail(std::string{"cannot start the projector host: "} + e.what());
  }
  // The job service exists in every node too: without workers it runs no
  // attempts but serves enqueues, external workers, management and
  // triggers. It stops with the projectors.
  std::optional<job_service> jobs;
  try {
    jobs_config jc;
    jc.node = name;
    jc.poll
      = std::chrono::milliseconds(std::max<std::size_t>(cfg.jobs_poll_ms, 10));
    jc.lease = std::chrono::milliseconds(
      std::max<std::size_t>(cfg.jobs_lease_ms, 1000));
    jc.heartbeat = std::max(jc.lease / 5, std::chrono::milliseconds{100});
    jc.shutdown_grace = std::chrono::milliseconds(cfg.jobs_shutdown_grace_ms);
    jc.retention.completed
      = std::chrono::seconds(cfg.jobs_retention_completed_s);
    jc.retention.discarded
      = std::chrono::seconds(cfg.jobs_retention_discarded_s);
    jobs.emplace(sys, *eng, jc, metrics->job_hooks());
  } catch (const std::exception& e) {
    projectors->stop();
    return fail(std::string{"cannot start the job service: "} + e.what());
  }
  // The cluster: after the projectors (it routes their management and
  // wakes them when a peer goes down), stopped right after them.
  std::optional<cluster_service> cluster;
  if (cc) {
    try {
      cc->on_refused = [metrics] {
        metrics->cluster_refused();
      };
      cc->on_forwarded = [metrics](const std::string& result) {
        metrics->append_forwarded(result);
      };
      cc->on_forward_batch = [metrics](std::size_t n) {
        metrics->forward_batch(n);
      };
      cluster.emplace(sys, *cc, ec.store);
      cluster->serve(*projectors);
      cluster->serve_appends(*eng);
      cluster->share_commits(*eng);
      if (!cc->writer.empty() && cc->writer != cc->node)
        std::cout << "dcbd: appends go to " << cc->writer
                  << "'s store actor while it is linked (window "
                  << cc->forward_window << ", batches in flight "
                  << cc->forward_batches << ")" << std::endl;
      std::cout << "dcbd: cluster \"" << cc->cluster_name << "\" on "
                << cc->addr.to_string() << " (incarnation "
                << cluster->incarnation() << "), " << cc->seeds.size()
                << " seeds" << std::endl;
    } catch (const std::exception& e) {
      jobs->stop();
      projectors->stop();
      return fail(std::string{"cannot start the cluster: "} + e.what());
    }
  }
  node::impl state{cfg,
                   sys,
                   *eng,
                   *projectors,
                   *jobs,
                   cluster ? &*cluster : nullptr,
                   metrics,
                   std::move(name),
                   ec.store.schema,
                   dsn,
                   hc,
                   pthread_self()};
  node self{state};
  // What setup spawned stops before the engine, whichever way this ends.
  auto give_up = [&](const std::string& message) {
    jobs->stop();
    projectors->stop();
    if (cluster)
      cluster->stop();
    state.run_stop_hooks();
    return fail(message);
  };
  if (options.setup) {
    try {
      options.setup(self);
    } catch (...) {
      return give_up("setup failed: " + what_of(std::current_exception()));
    }
  }
  state.setting_up = false;

  std::optional<prometheus::Exposer> exposer;
  std::optional<http_server> server;
  try {
    exposer.emplace(metrics_addr, 1);
    exposer->RegisterCollectable(metrics->registry());
    server.emplace(
      *eng, metrics, hc,
      http_extensions{std::move(state.routes), &*projectors, &*jobs, state.name,
                      cluster ? &*cluster : nullptr, &state.commands});
  } catch (const std::invalid_argument& e) {
    return give_up(std::string{"bad routes: "} + e.what());
  } catch (const std::exception& e) {
    return give_up(std::string{"cannot listen: "} + e.what());
  }
  std::cout << "dcbd: API on http://" << http_addr << " (port "
            << server->port() << "), metrics on http://" << metrics_addr
            << "/metrics" << std::endl;

  // The store actor's counters, for the gauges and the reconnect counter.
  std::atomic<bool> running{true};
  // One count of the jobs at a time (a slow database must not pile them
  // up); the answer may come after the poller has ended.
  auto counting = std::make_shared<std::atomic<bool>>(false);
  std::thread poller([&] {
    while (running) {
      if (auto st = eng->stats())
        metrics->store_state(*st, eng->gate()->depth());
      if (auto cache = eng->cache())
        metrics->cache_state(cache->snapshot(), eng->index_stats());
      metrics->projectors(projectors->snapshot());
      if (cluster) {
        std::vector<std::pair<std::string, bool>> peers;
        for (auto& m : cluster->members())
          if (!m.self)
            peers.emplace_back(m.name, m.status == member_status::up);
        metrics->cluster(peers);
      }
      if (!counting->exchange(true))
        jobs->counts(
          [metrics, counting](caf::expected<std::vector<queue_counts>> r) {
            if (r)
              metrics->jobs(*r);
            *counting = false;
          });
      for (int i = 0; i < 10 && running; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
  });

  int sig = 0;
  sigwait(&signals, &sig);
  if (state.stop_requested)
    std::cout << "dcbd: stop requested";
  else
    std::cout << "dcbd: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT");
  std::cout << ": stopping (answering requests in flight)" << std::endl;
  running = false;
  poller.join();
  server->stop(std::chrono::milliseconds(cfg.shutdown_grace_ms));
  server.reset();
  // The jobs (running attempts end or are given up), the projectors, then
  // what setup started, stop while the engine works.
  jobs->stop();
  projectors->stop();
  if (cluster)
    cluster->stop();
  state.run_stop_hooks();
  // The engine answers what its actors took and commits or fails the open
  // group before it returns.
  eng.reset();
  exposer.reset();
  std::cout << "dcbd: stopped" << std::endl;
  return state.exit_code;
}

int run_node(int argc, char** argv, std::function<void(node&)> setup) {
  node_options options;
  options.setup = std::move(setup);
  return run_node(argc, argv, std::move(options));
}

} // namespace dcbd
