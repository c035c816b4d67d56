// A dcbd node as a library: `run_node` is the whole `dcbd` process (config,
// engine, Prometheus exporter, HTTP API, graceful stop), and a setup
// callback lets a program that embeds it spawn its own actors, add HTTP
// routes and register what must stop before the engine:
//
//   #include "runtime/http_routes.hpp"
//   #include "runtime/node.hpp"
//
//   int main(int argc, char** argv) {
//     return dcbd::run_node(argc, argv, [](dcbd::node& n) {
//       auto worker = n.system().spawn(my_worker, std::ref(n.engine()));
//       n.add_routes([](dcbd::http::route_env& env) {
//         return dcbd::http::route_table{
//           {"/v1/things/{id}", dcbd::http::bhttp::verb::get,
//            [](const std::shared_ptr<dcbd::http::exchange>& x) {
//              x->reply(200, {{"id", x->path_param("id")}});
//            }}};
//       });
//       n.on_stop([worker] {
//         caf::anon_send_exit(worker, caf::exit_reason::user_shutdown);
//       });
//     });
//   }
//
// The `dcbd` executable is `run_node` without a setup (runtime/main.cpp).
#pragma once

#include "runtime/http_server.hpp"

#include <caf/fwd.hpp>

#include <functional>
#include <memory>
#include <string>

namespace dcbd {

class cluster_service;
class command_registry;
class engine;
class job_service;
class node;
class projector_host;
class node_metrics;

/// What `run_node` runs besides the node itself; every member may be empty.
struct node_options {
  /// Runs before the command line and the config file are parsed, with the
  /// actor system's configuration and its option set: add option groups
  /// (`caf::config_option_adder{options, "orders"}.add<std::size_t>("batch",
  /// "events per batch")`, read later with `caf::get_or(n.config(),
  /// "orders.batch", std::size_t{100})`; they appear in `--help`) or message
  /// types (`cfg.add_message_type<T>("name")`). dcbd's options (group
  /// "dcbd") and message types are already there. What it throws ends
  /// `run_node` with exit code 2 and "dcbd: setup failed: <what>".
  std::function<void(caf::actor_system_config& cfg,
                     caf::config_option_set& options)>
    configure;

  /// Runs once the engine exists, on the thread that called `run_node`,
  /// before the metrics exporter and the HTTP server start; see `node`.
  /// What it throws ends `run_node` with exit code 2 and "dcbd: setup
  /// failed: <what>" (the stop hooks registered so far run first).
  std::function<void(node&)> setup;
};

/// The running node, as a setup callback sees it. It lives until `run_node`
/// returns, so route sources and stop hooks may keep a reference to it.
class node {
public:
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // -- what the node is made of ----------------------------------------------

  /// The actor system; spawn your actors on it. Every actor must have ended
  /// by the time `run_node` returns (the system waits for them): stop yours
  /// in a stop hook (`on_stop`).
  caf::actor_system& system();

  /// The event store (store actor, readers, appenders, bus). Alive until
  /// after the stop hooks have run.
  dcbd::engine& engine();

  /// The node's projectors: `projectors().add(spec)` registers one (see
  /// actors/projector.hpp); it runs here while this node owns it. They stop
  /// before the stop hooks run.
  projector_host& projectors();

  /// The node's jobs (actors/jobs.hpp): `jobs().add_worker(spec)` runs a
  /// kind's jobs here; `jobs().enqueue(...)`, `jobs().store()` to enqueue in
  /// a transaction of your own. Workers stop (running attempts finish
  /// within `--dcbd.jobs-shutdown-grace-ms`) before the stop hooks run.
  job_service& jobs();

  /// The node's commands for HTTP clients (runtime/command_registry.hpp):
  /// `commands().add(name, factory)` lets `POST /v1/commands/{name}` run
  /// the command the factory makes of the request's JSON arguments.
  command_registry& commands();

  /// The node's cluster (actors/cluster.hpp): its members; null when
  /// `DCB_CLUSTER_ADDR` is not set (a node of its own).
  cluster_service* cluster();

  /// The node's metrics. Register your own families on
  /// `metrics()->registry()`: they are exported with the node's on
  /// `DCB_METRICS_ADDR`.
  std::shared_ptr<node_metrics> metrics() const;

  // -- what the node was told ------------------------------------------------

  /// The node's name: `DCB_NODE_NAME`, else "<hostname>-<pid>"; tells this
  /// process apart from others on the same database (logs, leases).
  const std::string& name() const;

  /// The PostgreSQL schema of the event store (`DCB_SCHEMA`).
  const std::string& schema() const;

  /// The libpq connection string (`DCB_POSTGRES_DSN`), for your own
  /// connections.
  const std::string& dsn() const;

  /// The parsed configuration: CAF's, with group "dcbd" and what
  /// `node_options::configure` added; read it with `caf::get_or`.
  const caf::actor_system_config& config() const;

  /// The HTTP server's settings (address, port, limits), as it will start.
  const http_config& http_settings() const;

  // -- extending it ----------------------------------------------------------

  /// Adds a route table to the HTTP API. `source` runs when the server
  /// starts, after setup, with the server's `route_env`; its routes come
  /// after the built-in areas and follow the same rules (exact paths and
  /// `{name}` patterns, see `http::router`). A malformed or ambiguous
  /// pattern, or an exception from `source`, ends `run_node` with exit code
  /// 2 and "dcbd: bad routes: <what>". Call it during setup only: later
  /// calls throw `std::logic_error`.
  void add_routes(http::route_source source);

  /// Registers `hook` to run when the node stops: after the HTTP server has
  /// stopped (no request is in flight any more) and before the engine is
  /// destroyed, so it may still use the engine. Hooks run once, on the
  /// thread that called `run_node`, in reverse order of registration; what
  /// one throws is logged and the next one runs. They also run when
  /// `run_node` fails after setup began. Thread-safe; once the hooks have
  /// started running, a call throws `std::logic_error`.
  void on_stop(std::function<void()> hook);

  /// Asks the node to stop as SIGTERM does (gracefully) and `run_node` to
  /// return `exit_code`; returns at once. Thread-safe; the first call
  /// decides the exit code. For a part of the node that cannot go on.
  void stop(int exit_code = 0);

private:
  friend int run_node(int argc, char** argv, node_options options);

  struct impl;

  explicit node(impl& state) : impl_(state) {
    // nop
  }

  impl& impl_;
};

/// Runs a node until SIGTERM, SIGINT or `node::stop`, and returns the
/// process's exit code. In order: blocks SIGTERM and SIGINT in the calling
/// thread (threads started later inherit that; call it from `main` before
/// starting any); runs `options.configure`; parses the configuration (CAF
/// config file and command line, group "dcbd"; `--help` prints it and
/// returns 0) and the environment (`DCB_POSTGRES_DSN`, `DCB_SCHEMA`,
/// `DCB_HTTP_ADDR`, `DCB_METRICS_ADDR`, `DCB_NODE_NAME`, and for a cluster
/// `DCB_CLUSTER_ADDR`, `DCB_CLUSTER_SEEDS`, `DCB_CLUSTER_NAME`); prints the
/// configuration; opens the engine; runs `options.setup`; starts the
/// metrics exporter and the HTTP server (with the routes setup added) and
/// prints their addresses; serves. To stop, it stops accepting and answers
/// the requests in flight, runs the stop hooks, destroys the engine (which
/// answers what its actors took and commits or fails the open group) and
/// returns 0 (or the code given to `node::stop`). Exit code 2, with a
/// "dcbd: ..." line on stderr, when the configuration is bad, the store
/// cannot be opened, setup fails, or it cannot listen.
int run_node(int argc, char** argv, node_options options);

/// `run_node` with only a setup callback (may be empty).
int run_node(int argc, char** argv, std::function<void(node&)> setup = {});

} // namespace dcbd
