// The node's HTTP API on Boost.Beast (DESIGN §4):
//
//   GET  /read?query=<json>&options=<json>   dcb.events: JSON array of
//                                            {type, tags, data, position}
//   POST /append                             dcb.events: {events, condition}
//                                            -> {durationInMicroseconds,
//                                                appendConditionFailed}
//   POST /v1/append                          -> {first_position,
//                                                last_position}; 409 on a
//                                            failed condition
//   GET  /v1/read?query=..&options=..        NDJSON stream of events, then
//                                            {"head": n}
//   GET  /v1/head                            {"head": n}
//   GET  /v1/subscribe?query=..&after=P      live subscription: SSE
//                                            (Accept: text/event-stream)
//                                            or NDJSON (API.md §5)
//   GET  /v1/ws                              WebSocket: subscriptions with
//                                            credits (API.md §5)
//   /v1/projectors...                        projectors (API.md §6)
//   /v1/jobs..., /v1/triggers..., /v1/queues jobs (API.md §7)
//   GET  /v1/commands, POST /v1/commands/{name}
//                                            the commands the embedding
//                                            program registered
//   GET  /healthz, /readyz
//
// Bodies are JSON, or msgpack with `Content-Type: application/msgpack` (the
// same documents; `data` may be binary). `Accept: application/msgpack`
// asks for msgpack answers. Errors are {"code", "message"} with a 4xx or
// 5xx status.
//
// Where things live (all in runtime/):
//   http_server.{hpp,cpp}      this façade: assembles the route tables and
//                              the transport
//   http_transport.hpp/.cpp,   the wire: accept loop, sessions, timeouts,
//   http_session.hpp,          keep-alive, limits (413/431/400), graceful
//   http_chunk_writer.cpp      stop, chunked responses without threads
//   http_routes.{hpp,cpp}      route, exchange (read the request, answer
//                              JSON/msgpack), router (labels, 404, 405)
//   routes_<area>.cpp          one route table per API area: dcb, v1,
//                              health, subscribe, ws
//   json_api.{hpp,cpp}         JSON shapes of the DCB model
//   wire_codec.{hpp,cpp}       msgpack <-> JSON documents (the binary wire)
//
// A new API area is a new runtime/routes_<area>.cpp, its declaration in
// http_routes.hpp, and its name in the list in http_server.cpp. Code that
// embeds a node adds its own tables without touching these files
// (`http_extensions`, `node::add_routes` in runtime/node.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dcbd {

class engine;
class cluster_service;
class job_service;
class projector_host;
class command_registry;
class node_metrics;

namespace http {

// Defined in runtime/http_routes.hpp.
struct route;
struct route_env;

/// One API area's routes.
using route_table = std::vector<route>;

/// Makes a route table from what the server offers its handlers (the shape
/// of every API area, e.g. `v1_routes`).
using route_source = std::function<route_table(route_env&)>;

} // namespace http

struct http_config {
  /// Address and port to listen on (port 0: any free port).
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  /// I/O threads.
  std::size_t threads = 2;
  /// Largest request body; larger ones get 413.
  std::size_t max_body = std::size_t{16} << 20;
  /// Time to receive a whole request once it has started; a client that
  /// stalls mid-request is disconnected.
  std::chrono::milliseconds request_timeout{10'000};
  /// How long a keep-alive connection may stay idle between requests.
  std::chrono::milliseconds idle_timeout{60'000};
  /// Time to write one response (or one chunk of a stream).
  std::chrono::milliseconds write_timeout{30'000};
  /// Streaming reads at once; more wait in line for a slot (at most 8 per
  /// slot, at most `request_timeout`), past that 503.
  std::size_t max_streams = 32;
  /// Events per chunk of a streaming read.
  std::size_t stream_chunk_events = 1000;
  /// Live subscriptions at once (SSE, NDJSON, WebSocket); more get 503.
  std::size_t max_subscriptions = 1000;
  /// A heartbeat on a subscription this often, busy or idle (0:
  /// none).
  std::chrono::milliseconds subscribe_heartbeat{15'000};
  /// Events a subscription may have in flight towards its socket.
  std::uint32_t subscribe_window = 512;
  /// Where the read index of reads from the cache queries the head on the
  /// I/O threads, without a thread hand-off (runtime/pg_head_reader.hpp):
  /// a libpq connection string (the primary) and the store's schema. Empty
  /// dsn: the index queries on a thread of its own.
  std::string read_index_dsn;
  std::string read_index_schema = "dcb";
  /// Connections of the I/O threads to that same database for reads the
  /// event cache cannot answer whole, at most `stream_chunk_events` events
  /// (runtime/database_reads.hpp; longer ones stream through the readers).
  /// 0, or no `read_index_dsn`: the readers answer them all.
  std::size_t read_connections = 4;
};

/// What an embedding adds to the server besides the built-in API areas.
/// Anything a later area needs from the node (the projector host, say)
/// comes in here and goes on to `http::route_env`.
struct http_extensions {
  /// More route tables, made when the server starts, after the built-in
  /// areas (and listed after them in 404 answers).
  std::vector<http::route_source> routes;
  /// The node's projectors, for /v1/projectors (null: no such routes).
  projector_host* projectors = nullptr;
  /// The node's jobs, for /v1/jobs, /v1/triggers and /v1/queues (null: no
  /// such routes).
  job_service* jobs = nullptr;
  /// The node's name and cluster, for /v1/cluster (null cluster: a node of
  /// its own).
  std::string node{};
  cluster_service* cluster = nullptr;
  /// The commands HTTP clients may run, for /v1/commands (null: none).
  const command_registry* commands = nullptr;
};

class http_server {
public:
  /// Builds the routes, binds and starts serving. Throws `std::system_error`
  /// when it cannot bind, and `std::invalid_argument` when the routes are
  /// bad: a malformed or ambiguous pattern (see `http::router`), or an
  /// extension's route source that threw (its message is kept).
  http_server(engine& eng, std::shared_ptr<node_metrics> metrics,
              http_config cfg, http_extensions ext = {});

  /// Stops (see `stop`).
  ~http_server();

  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// The port it listens on.
  std::uint16_t port() const;

  /// Streaming reads running, and waiting in line for a slot.
  std::size_t open_streams() const;
  std::size_t waiting_streams() const;

  /// Graceful stop: stops accepting, waits up to `grace` for the requests
  /// in flight to be answered, then closes every connection and waits for
  /// the calls still running to end. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds{30});

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace dcbd
