// Routing for the HTTP API: a route is a path, a method and a handler; an
// `exchange` is what a handler reads the request from and answers through
// (JSON, or msgpack when asked; errors as {"code", "message"}).
//
// Each API area has its own route table in its own file:
//
//   runtime/routes_dcb.cpp      GET /read, POST /append (dcb.events)
//   runtime/routes_v1.cpp       POST /v1/append, GET /v1/read, GET /v1/head
//   runtime/routes_health.cpp   GET /healthz, GET /readyz
//   runtime/routes_subscribe.cpp  GET /v1/subscribe (SSE, NDJSON)
//   runtime/routes_ws.cpp       GET /v1/ws (subscriptions over WebSocket)
//   runtime/routes_projectors.cpp  /v1/projectors... (API.md §6)
//   runtime/routes_jobs.cpp     /v1/jobs..., /v1/triggers..., /v1/queues
//                               (API.md §7)
//   runtime/routes_cluster.cpp  GET /v1/cluster (API.md §9)
//   runtime/routes_stats.cpp    GET /v1/stats (the console's overview)
//   runtime/routes_ui.cpp       GET /ui, /ui/{file} (the web console)
//
// To add an area: write runtime/routes_<area>.cpp defining
// `route_table <area>_routes(route_env&)`, declare it below, and add it to
// the list in runtime/http_server.cpp (and the file to CMakeLists.txt); code
// that embeds a node can add tables too (`node::add_routes`,
// runtime/node.hpp). A route's path is exact or a pattern with `{name}`
// segments (see `router`). The router derives everything else from the
// tables: the metrics `route` label, 404 (naming the advertised routes), 405
// with Allow, HEAD on GET.
#pragma once

#include "runtime/http_server.hpp"
#include "runtime/http_transport.hpp"
#include "store/error.hpp"

#include <caf/error.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dcbd {
class command_registry;
} // namespace dcbd

namespace dcbd::http {

class database_reads;

using json = nlohmann::json;

inline constexpr const char* json_type = "application/json";
inline constexpr const char* msgpack_type = "application/msgpack";
inline constexpr const char* ndjson_type = "application/x-ndjson";

/// The HTTP status of a store error code.
unsigned status_of(errc code);

/// The decoded `{name}` segments of a request's path, in pattern order.
using path_params = std::vector<std::pair<std::string, std::string>>;

/// One request being answered, on the route `route()` (its metrics label).
/// Answer once: `reply`, `error`, `fail`, `open_stream` or `upgrade`. A handler
/// may answer later from any thread, keeping the exchange alive meanwhile; one
/// dropped without an answer answers 500. Every answer is counted in the
/// metrics before the client can see it (streams count themselves).
class exchange : public std::enable_shared_from_this<exchange> {
public:
  /// With `negotiate`, `Accept: application/msgpack` gets msgpack answers.
  exchange(responder r, std::shared_ptr<node_metrics> metrics,
           std::string route, std::size_t max_body, bool negotiate = true);

  ~exchange();

  exchange(const exchange&) = delete;
  exchange& operator=(const exchange&) = delete;

  const request& req() const {
    return r_.req();
  }

  const std::string& route() const {
    return route_;
  }

  /// When the request was read.
  clock::time_point started() const {
    return r_.started();
  }

  /// The client's address, "host:port" ("" when unknown).
  const std::string& remote() const {
    return r_.remote();
  }

  /// The URL query parameter `key`, decoded; nullopt when it is absent or
  /// empty (API.md writes its templates as `?queue=&state=`, so `limit=`
  /// means "no limit given", not a bad number). Throws
  /// `store_error(invalid_argument)` on a malformed percent-encoding.
  std::optional<std::string> parameter(std::string_view key) const;

  /// The path parameter `name` of the route's pattern, percent-decoded:
  /// "x y" for the path "/v1/projectors/x%20y" on the route
  /// "/v1/projectors/{name}". Never empty (such a path matches no pattern).
  /// Throws `store_error(internal)` when the pattern has no `{name}`: the
  /// router only runs a handler when every parameter of its pattern matched,
  /// so a missing one is a bug in the handler, not a bad request.
  const std::string& path_param(std::string_view name) const;

  /// Every path parameter, in pattern order; empty on an exact route.
  const http::path_params& path_params() const {
    return path_params_;
  }

  /// The body as a JSON document: JSON, or msgpack with `Content-Type:
  /// application/msgpack`. Throws `store_error(invalid_argument)` naming
  /// "body".
  json body() const;

  /// Whether answers are msgpack.
  bool msgpack_out() const {
    return msgpack_out_;
  }

  /// One document as a stream line: NDJSON, or one msgpack document.
  std::string line(const json& j) const;

  /// Answers `status` with `body`.
  void reply(unsigned status, const json& body, const std::string& allow = {});

  /// Answers `status` with `body` as it is, of `content_type`, with
  /// `headers` (the web console's files; an empty body for 304).
  void
  reply_bytes(unsigned status, std::string_view content_type, std::string body,
              const std::vector<std::pair<std::string, std::string>>& headers
              = {});

  /// Answers `status` with {"code": code, "message": message}.
  void error(unsigned status, std::string code, std::string message,
             const std::string& allow = {});

  /// Answers a store error with its status (see `status_of`).
  void fail(errc code, std::string message);
  void fail(const caf::error& err);

  /// Runs `f` on the connection's strand; what it throws is answered as
  /// `fail` (if nothing was answered yet).
  void on_strand(std::function<void()> f);

  /// Runs `on_expiry` on the strand once `after` has passed, unless the
  /// request was answered by then (see `responder::set_deadline`); what it
  /// throws is answered as `fail`. Call it on the strand (in the handler or
  /// in `on_strand`).
  void set_deadline(std::chrono::milliseconds after,
                    std::function<void()> on_expiry);

  /// Whether an answer was given (on the strand, a later answer would be
  /// dropped).
  bool answered() const {
    return answered_.load();
  }

  /// Answers 200 with a chunked body of `content_type` (and `headers`).
  std::shared_ptr<chunk_writer>
  open_stream(std::string_view content_type,
              const std::vector<std::pair<std::string, std::string>>& headers
              = {});

  /// Answers by upgrading the connection to a WebSocket, counted as 101;
  /// a request that is no upgrade gets 400 (counted so) and null.
  std::shared_ptr<websocket> upgrade(websocket_handlers h);

  /// Counts the request in the metrics with `status` (for streams, which
  /// know their outcome late).
  void count(unsigned status);

  /// The node's metrics; may be null.
  node_metrics* metrics() const {
    return metrics_.get();
  }

private:
  // Sets `path_params_` before the handler runs.
  friend class router;

  bool claim();

  responder r_;
  std::shared_ptr<node_metrics> metrics_;
  std::string route_;
  http::path_params path_params_;
  std::size_t max_body_;
  std::string query_string_;
  bool msgpack_out_ = false;
  std::atomic<bool> answered_{false};
};

/// Answers one request.
using handler = std::function<void(const std::shared_ptr<exchange>&)>;

/// A path, its method (a GET route answers HEAD too) and the handler. The
/// path is exact ("/v1/head") or a pattern whose `{name}` segments match one
/// path segment each ("/v1/projectors/{name}/pause"), read by the handler
/// with `exchange::path_param`; `router` has the rules.
struct route {
  std::string path;
  bhttp::verb method;
  handler fn;
  /// Named in 404 answers (health probes are not).
  bool advertised = true;
};

// `route_table` (a vector of them) and `route_source` are declared in
// runtime/http_server.hpp.

/// Streaming responses at once, across areas. Past `max` a stream waits for
/// a slot, first come first served, at most `max_wait` and with at most
/// `max_waiting()` others; a stream that gets no slot is answered 503 by its
/// route. A pool's queue, as pgbouncer's: a burst of readers past the limit
/// is served late rather than refused. Keeps the open-streams gauge.
class stream_slots {
public:
  /// Runs with true when the caller now holds a slot (and must `release`
  /// it), with false when it gets none. Called on the thread of `acquire`
  /// or of the `release` that hands the slot over, with no lock held: post
  /// to a strand before doing real work.
  using grant = std::function<void(bool granted)>;

  stream_slots(std::size_t max, std::shared_ptr<node_metrics> metrics,
               std::chrono::milliseconds max_wait = std::chrono::seconds{10});

  enum class outcome { taken, queued, refused };

  /// Takes a slot: `taken` when one was free (the caller holds it now;
  /// `g` is dropped), `refused` when all are taken and the line is full
  /// (`g` is dropped), else `queued`: `g` runs later, with true when a
  /// `release` hands it a slot, with false at the first `acquire` or
  /// `release` after it waited `max_wait`.
  outcome acquire(grant g);

  /// Gives a slot back, or hands it to the first in line.
  void release();

  std::size_t in_use() const;
  std::size_t waiting() const;

  std::size_t max() const {
    return max_;
  }

  std::size_t max_waiting() const {
    return max_ * 8;
  }

  std::chrono::milliseconds max_wait() const {
    return max_wait_;
  }

private:
  using clock = std::chrono::steady_clock;
  struct waiter {
    grant g;
    clock::time_point deadline;
  };

  // Moves the waiters past their deadline to `out` (the line is in
  // deadline order: one `max_wait` for all).
  void expire_locked(clock::time_point now, std::vector<grant>& out);

  std::size_t max_;
  std::shared_ptr<node_metrics> metrics_;
  std::chrono::milliseconds max_wait_;
  mutable std::mutex mtx_;
  std::size_t used_ = 0;
  std::deque<waiter> line_;
};

/// One held stream slot, given back by `release` or when destroyed.
class stream_slot {
public:
  explicit stream_slot(stream_slots& slots) : slots_(&slots) {
    // nop
  }

  stream_slot(const stream_slot&) = delete;
  stream_slot& operator=(const stream_slot&) = delete;

  ~stream_slot() {
    release();
  }

  void release() {
    if (auto* s = std::exchange(slots_, nullptr))
      s->release();
  }

private:
  stream_slots* slots_;
};

/// Runs `start` on `x`'s strand with a held slot of `slots`: at once when
/// one is free, after a wait in line otherwise; answers 503 `overloaded`
/// when none comes. A slot nobody holds any more is given back, also when
/// the client went away while waiting.
void with_stream_slot(stream_slots& slots, const std::shared_ptr<exchange>& x,
                      std::function<void(std::shared_ptr<stream_slot>)> start);

/// Live subscriptions (SSE, NDJSON and WebSocket ones) at once: past
/// `max`, 503. When the server stops, `close_all` ends every one of them
/// (each writes its last frame), and `wait_empty` waits until their sinks
/// are gone, so a graceful stop neither waits for streams that never end by
/// themselves nor stops the I/O under a sink that still holds a connection.
class subscription_hub {
public:
  explicit subscription_hub(std::size_t max);

  /// Takes a slot; returns its token, or 0 when all are taken or the
  /// server is stopping (see `closing`).
  std::uint64_t open();

  /// Registers what `close_all` runs for `token` (at once when the hub is
  /// already closing). Call it from the thread that opened the slot.
  void arm(std::uint64_t token, std::function<void()> close);

  /// Gives back the slot of `token` (idempotent).
  void release(std::uint64_t token);

  /// The client ended the subscription of `token`: its slot no longer
  /// counts against `max` (so the client may subscribe again at once),
  /// though it stays open until `release`, while its sink winds down.
  void let_go(std::uint64_t token);

  /// Runs every registered closer; `open` fails from now on.
  void close_all();

  /// Waits up to `d` until every slot is released; false on timeout.
  bool wait_empty(std::chrono::milliseconds d);

  bool closing() const;

  std::size_t in_use() const;

  std::size_t max() const {
    return max_;
  }

private:
  std::size_t max_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  bool closing_ = false;
  std::uint64_t next_ = 1;
  std::map<std::uint64_t, std::function<void()>> open_;
  // Open tokens that `let_go` took out of the count.
  std::set<std::uint64_t> let_go_;
};

/// Holds a hub slot; gives it back when it goes. Owned by a `hub_hold`,
/// which its subscription's callbacks share.
class hub_slot {
public:
  hub_slot(subscription_hub& hub, std::uint64_t token)
    : hub_(hub)
    , token_(token) {
    // nop
  }

  hub_slot(const hub_slot&) = delete;
  hub_slot& operator=(const hub_slot&) = delete;

  ~hub_slot() {
    hub_.release(token_);
  }

private:
  subscription_hub& hub_;
  std::uint64_t token_;
};

/// What a subscription's callbacks hold, shared by them (one
/// `std::shared_ptr<hub_hold<T>>`): `T`, the connection side of the
/// subscription, and its hub slot. When the last copy goes (when the sink
/// is gone, on whatever thread drops it), `T` is destroyed first and the
/// slot given back after it. So once `subscription_hub::wait_empty`
/// returns, no sink holds a connection (a session, a WebSocket) any more,
/// and the transport (its io_context) may go. Callbacks must hold the
/// connection side only through this, never in captures of their own: a
/// closure destroys its captures in an order of its own, and a connection
/// dropped after the slot could outlive the transport.
template <class T>
class hub_hold {
public:
  hub_hold(subscription_hub& hub, std::uint64_t token, T held)
    : slot_(hub, token)
    , held_(std::move(held)) {
    // nop
  }

  hub_hold(const hub_hold&) = delete;
  hub_hold& operator=(const hub_hold&) = delete;

  T& held() {
    return held_;
  }

private:
  // Declared before `held_`, so destroyed after it.
  hub_slot slot_;
  T held_;
};

/// What route tables are built from. Outlives every handler.
///
/// Node-wide services that later areas need (the projector host) become
/// members at the end with a default (null), so that existing
/// initializations stay valid, and come from `http_extensions`.
struct route_env {
  engine& eng;
  std::shared_ptr<node_metrics> metrics;
  http_config cfg;
  stream_slots& streams;
  subscription_hub& subscriptions;
  /// The node's projectors (null: no projector routes).
  projector_host* projectors = nullptr;
  /// The node's jobs (null: no job routes).
  job_service* jobs = nullptr;
  /// The node's name, and its cluster (null: a node of its own).
  std::string node{};
  cluster_service* cluster = nullptr;
  /// The commands HTTP clients may run (null: none).
  const command_registry* commands = nullptr;
  /// Reads below the event cache on the I/O threads (null: through the
  /// readers; runtime/database_reads.hpp).
  database_reads* database = nullptr;
};

// -- API areas: one file each -------------------------------------------------

route_table dcb_routes(route_env& env);       // runtime/routes_dcb.cpp
route_table v1_routes(route_env& env);        // runtime/routes_v1.cpp
route_table health_routes(route_env& env);    // runtime/routes_health.cpp
route_table subscribe_routes(route_env& env); // runtime/routes_subscribe.cpp
route_table ws_routes(route_env& env);        // runtime/routes_ws.cpp
route_table projector_routes(route_env& env); // runtime/routes_projectors.cpp
route_table job_routes(route_env& env);       // runtime/routes_jobs.cpp
route_table cluster_routes(route_env& env);   // runtime/routes_cluster.cpp
route_table stats_routes(route_env& env);     // runtime/routes_stats.cpp
route_table ui_routes(route_env& env);        // runtime/routes_ui.cpp
route_table command_routes(route_env& env);   // runtime/routes_commands.cpp

/// Every area's routes, as the server serves them (runtime/http_server.cpp).
route_table all_routes(route_env& env);

// -- router -------------------------------------------------------------------

/// Finds the route of a request and runs it; answers 404 and 405 itself.
///
/// How a request path finds its table path:
/// - An exact table path matches only itself, byte for byte (undecoded).
/// - A pattern's literal segments match byte for byte; each `{name}` segment
///   matches one non-empty path segment, percent-decoded ('+' stays '+'). A
///   segment that is malformed ('%' without two hex digits) or decodes to
///   something holding '/' or NUL matches no parameter, so its path gets 404
///   and never reaches a handler.
/// - Segments are what lies between slashes, so a trailing slash or an empty
///   segment is a segment of its own: "/v1/projectors/x/" and
///   "/v1/projectors//pause" match neither "/v1/projectors/{name}" nor
///   "/v1/projectors/{name}/pause" (404).
/// - When several table paths match, the most specific one takes the path:
///   an exact path first; among patterns, the one with a literal where the
///   other has a parameter, at the first segment where they differ.
/// - The path's own routes then decide by method: the route of the method
///   (a GET route answers HEAD), else 405 with Allow listing those routes'
///   methods. Less specific paths are not asked: with `GET /a/b` and
///   `POST /a/{x}`, `POST /a/b` is 405.
/// - A request is counted under the table path as written (the pattern,
///   never the raw path, which would make a metrics label per value), or
///   "other" when no path matched.
///
/// Exact paths are looked up first by plain comparison, so patterns cost
/// the hot exact routes nothing.
class router {
public:
  /// Throws `std::invalid_argument` on a malformed pattern (a '{' or '}'
  /// that is not a whole `{name}` segment, an empty or repeated name, no
  /// leading '/') and on two patterns that differ only in their parameter
  /// names (they would match the same paths).
  router(route_table routes, std::shared_ptr<node_metrics> metrics,
         std::size_t max_body);

  /// The route of `path` and `method`; when none, `allow` lists the methods
  /// the path has (empty: 404).
  struct match {
    const route* found = nullptr;
    std::string allow;
    /// The metrics label: the matching table path as written, or "other".
    /// Valid while the router lives.
    std::string_view label = "other";
    /// The decoded parameters of a patterned path (when `found`).
    http::path_params params;
  };

  match find(std::string_view path, bhttp::verb method) const;

  /// The metrics label of `path`: the table path that matches it, as
  /// written, or "other".
  std::string label_of(std::string_view path) const;

  /// The advertised paths as written, "/read, /append, ...", for 404
  /// answers.
  std::string known() const;

  const route_table& routes() const {
    return routes_;
  }

  /// Answers a request (transport's `on_request`). Exceptions from the
  /// handler are answered as errors (`store_error` with its status).
  void dispatch(responder r) const;

  /// Answers a request the transport could not read (`on_refused`).
  void refuse(responder r, unsigned status, std::string code,
              std::string message) const;

private:
  // One segment of a pattern: literal text, or a parameter's name.
  struct segment {
    std::string text;
    bool param = false;
  };

  // One path of the table and its routes (indices into `routes_`, in table
  // order); a pattern also has its segments.
  struct path_entry {
    std::string path;
    std::vector<std::size_t> routes;
    std::vector<segment> segments;
  };

  // The table path that takes `path`, or null.
  const path_entry* resolve(std::string_view path) const;

  route_table routes_;
  // Paths without parameters, in table order.
  std::vector<path_entry> exact_;
  // Patterns, most specific first (see `router`).
  std::vector<path_entry> patterns_;
  std::shared_ptr<node_metrics> metrics_;
  std::size_t max_body_;
};

/// The path of a request target (without the query string).
std::string_view path_of(std::string_view target);

} // namespace dcbd::http
