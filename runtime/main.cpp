// dcbd: one node. The environment names the database and the addresses
// (the stable contract for containers); everything else comes from CAF's
// config file (caf-application.ini) and command line, group "dcbd"
// (`dcbd --help` lists them with their defaults).
#include "actors/engine.hpp"
#include "actors/types.hpp"
#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "store/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <prometheus/exposer.h>
#include <pthread.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

namespace {

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
  std::size_t http_threads = 2;
  std::size_t max_body = std::size_t{16} << 20;
  std::size_t request_timeout_ms = 10'000;
  std::size_t idle_timeout_ms = 60'000;
  std::size_t max_streams = 32;
  std::size_t shutdown_grace_ms = 30'000;
  std::size_t max_subscriptions = 1000;
  std::size_t subscribe_heartbeat_ms = 15'000;
  std::size_t bus_poll_ms = 500;
  std::size_t bus_queue_events = 2048;

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
      .add(http_threads, "http-threads", "HTTP I/O threads")
      .add(max_body, "max-body", "largest request body in bytes (else 413)")
      .add(request_timeout_ms, "request-timeout-ms",
           "time to receive a request once its header arrived")
      .add(idle_timeout_ms, "idle-timeout-ms",
           "keep-alive idle time and time to receive a header")
      .add(max_streams, "max-streams", "streaming reads at once (else 503)")
      .add(shutdown_grace_ms, "shutdown-grace-ms",
           "how long a stop waits for requests in flight")
      .add(max_subscriptions, "max-subscriptions",
           "live subscriptions at once (else 503)")
      .add(subscribe_heartbeat_ms, "subscribe-heartbeat-ms",
           "heartbeat on an idle subscription (0: none)")
      .add(bus_poll_ms, "bus-poll-ms",
           "how often the bus looks for commits of other processes besides "
           "NOTIFY")
      .add(bus_queue_events, "bus-queue-events",
           "events queued per subscriber before it falls back to reads");
  }
};

std::string env_or(const char* name, std::string fallback) {
  auto v = std::getenv(name);
  return v && *v ? std::string{v} : fallback;
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

} // namespace

int main(int argc, char** argv) {
  // Signals are taken by sigwait below; every thread started from here on
  // inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  node_config cfg;
  dcbd::register_types(cfg);
  dcbd::tune_scheduler(cfg);
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
  dcbd::http_config hc;
  if (!split_address(http_addr, hc.address, hc.port))
    return fail("DCB_HTTP_ADDR must be host:port, got \"" + http_addr + "\"");
  std::string metrics_host;
  std::uint16_t metrics_port = 0;
  if (!split_address(metrics_addr, metrics_host, metrics_port))
    return fail("DCB_METRICS_ADDR must be host:port, got \"" + metrics_addr
                + "\"");
  hc.threads = cfg.http_threads;
  hc.max_body = cfg.max_body;
  hc.request_timeout = std::chrono::milliseconds(cfg.request_timeout_ms);
  hc.idle_timeout = std::chrono::milliseconds(cfg.idle_timeout_ms);
  hc.max_streams = cfg.max_streams;
  hc.max_subscriptions = cfg.max_subscriptions;
  hc.subscribe_heartbeat
    = std::chrono::milliseconds(cfg.subscribe_heartbeat_ms);

  dcbd::engine_config ec;
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
  auto metrics = std::make_shared<dcbd::node_metrics>();
  ec.metrics = metrics->store_hooks();
  ec.bus.metrics = metrics->bus_hooks();
  ec.bus.poll
    = std::chrono::milliseconds(std::max<std::size_t>(cfg.bus_poll_ms, 10));
  ec.bus.queue_events = cfg.bus_queue_events;

  std::cout << "dcbd: schema " << ec.store.schema << ", readers " << ec.readers
            << " x " << ec.reader_connections << " connections, appenders "
            << ec.appenders << ", groups of <= " << ec.group.max_requests
            << " requests / " << ec.group.max_events << " events, queue "
            << ec.group.max_queue << ", http threads " << hc.threads
            << ", max body " << hc.max_body << " bytes" << std::endl;

  caf::actor_system sys{cfg};
  std::optional<dcbd::engine> eng;
  try {
    eng.emplace(sys, ec);
  } catch (const std::exception& e) {
    return fail(std::string{"cannot open the store: "} + e.what());
  }
  std::optional<prometheus::Exposer> exposer;
  std::optional<dcbd::http_server> server;
  try {
    exposer.emplace(metrics_addr, 1);
    exposer->RegisterCollectable(metrics->registry());
    server.emplace(*eng, metrics, hc);
  } catch (const std::exception& e) {
    return fail(std::string{"cannot listen: "} + e.what());
  }
  std::cout << "dcbd: API on http://" << http_addr << " (port "
            << server->port() << "), metrics on http://" << metrics_addr
            << "/metrics" << std::endl;

  // The store actor's counters, for the gauges and the reconnect counter.
  std::atomic<bool> running{true};
  std::thread poller([&] {
    while (running) {
      if (auto st = eng->stats())
        metrics->store_state(*st, eng->gate()->depth());
      for (int i = 0; i < 10 && running; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
  });

  int sig = 0;
  sigwait(&signals, &sig);
  std::cout << "dcbd: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
            << ": stopping (answering requests in flight)" << std::endl;
  running = false;
  poller.join();
  server->stop(std::chrono::milliseconds(cfg.shutdown_grace_ms));
  server.reset();
  // The engine answers what its actors took and commits or fails the open
  // group before it returns.
  eng.reset();
  exposer.reset();
  std::cout << "dcbd: stopped" << std::endl;
  return 0;
}
