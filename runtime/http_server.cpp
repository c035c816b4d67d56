// The façade: builds the route tables of every API area (one file each, see
// runtime/http_routes.hpp), a router over them, and the transport
// (runtime/http_transport.hpp) that feeds the router.
#include "runtime/http_server.hpp"

#include "actors/engine.hpp"
#include "runtime/database_reads.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/http_transport.hpp"
#include "runtime/pg_head_reader.hpp"
#include "store/pg_head.hpp"

#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <utility>

namespace dcbd {

namespace http {

// Every API area's routes, in the order 404 answers name them. A new area
// goes into this list (and its declaration into http_routes.hpp).
route_table all_routes(route_env& env) {
  route_table all;
  for (auto area : {dcb_routes, v1_routes, subscribe_routes, ws_routes,
                    projector_routes, job_routes, cluster_routes,
                    command_routes, stats_routes, ui_routes, health_routes})
    for (auto& r : area(env))
      all.push_back(std::move(r));
  return all;
}

namespace {

// The built-in areas, then the extensions' tables.
route_table assemble(route_env& env, const http_extensions& ext) {
  auto all = all_routes(env);
  for (auto& source : ext.routes) {
    route_table more;
    try {
      more = source(env);
    } catch (const std::exception& e) {
      throw std::invalid_argument(std::string{"an added route table failed: "}
                                  + e.what());
    }
    for (auto& r : more)
      all.push_back(std::move(r));
  }
  return all;
}

} // namespace

} // namespace http

struct http_server::impl {
  http::stream_slots streams;
  http::subscription_hub subscriptions;
  http::route_env env;
  http::router routes;
  // Last: stopped and destroyed before what its handlers use.
  http::http_transport transport;
  // Leads the engine's read index on the transport's loop (when set up).
  std::shared_ptr<read_index> index;
  std::shared_ptr<http::pg_head_reader> head_reader;
  // Reads below the event cache on the transport's loop (when set up).
  std::unique_ptr<http::database_reads> database;

  impl(engine& eng, std::shared_ptr<node_metrics> metrics, http_config cfg,
       const http_extensions& ext)
    : streams(cfg.max_streams, metrics, cfg.request_timeout)
    , subscriptions(cfg.max_subscriptions)
    , env{eng,           metrics,        cfg,      streams,
          subscriptions, ext.projectors, ext.jobs, ext.node,
          ext.cluster,   ext.commands}
    , routes(http::assemble(env, ext), metrics, cfg.max_body)
    , transport(cfg, handlers()) {
    index = eng.index();
    if (index && !cfg.read_index_dsn.empty()) {
      http::pg_head_reader::config rc;
      rc.dsn = cfg.read_index_dsn;
      rc.sql = pg_head_sql(cfg.read_index_schema);
      head_reader = http::pg_head_reader::make(transport.context(), rc);
      index->lead_with(head_reader->leader());
    }
    if (!cfg.read_index_dsn.empty() && cfg.read_connections > 0) {
      http::database_reads::config dc;
      dc.dsn = cfg.read_index_dsn;
      dc.schema = cfg.read_index_schema;
      dc.connections = cfg.read_connections;
      dc.input_limits = eng.config().store.limits;
      database = std::make_unique<http::database_reads>(transport.context(),
                                                        std::move(dc));
      env.database = database.get();
    }
  }

  // Hands the read index back to its own thread before the loop stops.
  void stop_leading() {
    if (head_reader)
      index->lead_alone();
  }

  http::transport_handlers handlers() {
    http::transport_handlers h;
    h.on_request = [this](http::responder r) {
      routes.dispatch(std::move(r));
    };
    h.on_refused = [this](http::responder r, unsigned status, std::string code,
                          std::string message) {
      routes.refuse(std::move(r), status, std::move(code), std::move(message));
    };
    return h;
  }
};

http_server::http_server(engine& eng, std::shared_ptr<node_metrics> metrics,
                         http_config cfg, http_extensions ext)
  : impl_(
    std::make_unique<impl>(eng, std::move(metrics), std::move(cfg), ext)) {
  // nop
}

http_server::~http_server() {
  stop(std::chrono::milliseconds{0});
}

std::uint16_t http_server::port() const {
  return impl_->transport.port();
}

std::size_t http_server::open_streams() const {
  return impl_->streams.in_use();
}

std::size_t http_server::waiting_streams() const {
  return impl_->streams.waiting();
}

void http_server::stop(std::chrono::milliseconds grace) {
  // Subscriptions never end by themselves: end them (each writes its last
  // frame) and wait until their sinks are gone, then wait for what is in
  // flight. The wait has no bound: a sink holds its connection (a session,
  // a WebSocket), which must not outlive the transport (see `hub_hold`),
  // and the bus ends every cancelled subscription (or the sink sees the
  // bus go), so a slow end is only logged.
  impl_->subscriptions.close_all();
  auto patience = std::max(grace, std::chrono::milliseconds{2000});
  while (!impl_->subscriptions.wait_empty(patience))
    std::cerr << "dcbd http: " << impl_->subscriptions.in_use()
              << " subscriptions have not ended yet; waiting for them"
              << std::endl;
  impl_->stop_leading();
  // Reads in flight below the cache go to the readers instead.
  if (impl_->database)
    impl_->database->close();
  impl_->transport.stop(grace);
  // The loop has stopped: its connections close here (what the head reader
  // had in flight was ended by `lead_alone`).
  impl_->head_reader.reset();
  if (impl_->database) {
    impl_->env.database = nullptr;
    impl_->database.reset();
  }
}

} // namespace dcbd
