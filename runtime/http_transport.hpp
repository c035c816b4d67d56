// HTTP/1.1 transport on Boost.Beast: what happens on the wire, and nothing
// about what the requests mean (that is runtime/http_routes.hpp and the
// route files).
//
//   accept loop -> one session per connection, on its own strand:
//     read the header (idle timeout), then the body (request timeout),
//     hand the request to `on_request` with a `responder`, write the answer
//     (write timeout), and read the next request while keep-alive holds.
//   Requests it cannot read get an answer through `on_refused` and the
//   connection closes: body over the limit 413, header over 64 KiB 431,
//   malformed 400.
//   A chunked response goes through a `chunk_writer` (head, chunks, last
//   chunk), fed from any thread; no thread is started per stream. A
//   long-lived one watches its socket (`watch_close`) to notice at once a
//   client that goes away.
//   A request may be answered by upgrading its connection to a WebSocket
//   (`accept_websocket`): text frames both ways on the same strand, until
//   either side closes it or the server stops.
//
// It is the network boundary: an exception from a handler or from network
// input is caught, logged to stderr, and the server carries on.
//
// Where it lives: this header (the public face), http_transport.cpp (accept
// loop, I/O threads, stop, `responder`), http_session.hpp (internal: one
// connection and its reading/writing), http_chunk_writer.cpp (the writer
// of chunked responses), http_websocket.cpp (upgraded connections).
#pragma once

#include "runtime/http_server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dcbd::http {

namespace bhttp = boost::beast::http;

using request = bhttp::request<bhttp::string_body>;
using response = bhttp::response<bhttp::string_body>;
using response_head = bhttp::response<bhttp::empty_body>;
using clock = std::chrono::steady_clock;

/// Writes one chunked response in order on its connection: the head, then
/// chunks, then the last chunk. Every call is thread-safe and returns at
/// once; the writing happens on the session's strand. For long-lived server
/// pushes too (SSE, NDJSON subscriptions): memory is what is queued, so
/// pace producers with the completions or watch `queued()`. A long-lived
/// push that may stay idle calls `watch_close`, so that a client that goes
/// away frees its resources at once, not at the next failed write.
class chunk_writer {
public:
  /// Called once per call, on the strand: true once the data is on the
  /// socket, false when it never will be (the client went away, the write
  /// timed out, the stream ended or was aborted before).
  using completion = std::function<void(bool written)>;

  virtual ~chunk_writer() = default;

  /// Queues `data` as one chunk (empty data completes at once).
  virtual void write(std::string data, completion done = {}) = 0;

  /// Queues the last chunk; the connection then serves its next request
  /// (keep-alive) or closes. Call it once; the writer refuses writes after.
  virtual void end(completion done = {}) = 0;

  /// Drops what is queued (completions get false) and closes the
  /// connection.
  virtual void abort() = 0;

  /// False once a write failed or the stream was aborted: the client will
  /// not get what follows.
  virtual bool open() const = 0;

  /// Chunks queued and not yet written.
  virtual std::size_t queued() const = 0;

  /// Watches the connection while the response streams: when the client
  /// closes it (EOF, reset) or sends anything, the writer fails as if a
  /// write had failed (open() turns false, queued completions get false) and
  /// `on_closed` runs once on the strand. The connection is not reused
  /// after the response (keep-alive off). Call at most once, after opening.
  ///
  /// `on_closed` also runs (once) when the writer fails for any other
  /// reason: a failed or timed-out write, `abort`, the server stopping; at
  /// once if it had failed before the call. It never runs for a response
  /// that ended normally (its last chunk was written): it is then dropped
  /// unrun, so whatever it holds is freed either way.
  virtual void watch_close(std::function<void()> on_closed) = 0;
};

/// Largest WebSocket message read; a larger one closes the connection
/// (close code 1009, message too big).
inline constexpr std::size_t websocket_max_message = 64 * 1024;

/// How long a WebSocket close handshake (after the frames queued before it)
/// may take before the connection is dropped.
inline constexpr std::chrono::milliseconds websocket_close_timeout{2'000};
/// After that, how long the dropped connection may take to end before the
/// WebSocket is ended without it (its operations are stuck).
inline constexpr std::chrono::milliseconds websocket_stuck_timeout{1'000};

/// One WebSocket connection upgraded from an HTTP request. Text frames in
/// and out. Every call is thread-safe and returns at once; the I/O runs on
/// the connection's strand. Do not keep it past the transport's life.
class websocket {
public:
  /// Called once per `send`, on the strand: true once the frame is written
  /// (to the connection's write layer, which holds at most 64 KiB before
  /// the next frame waits for the socket), false when it never will be.
  using completion = std::function<void(bool written)>;

  virtual ~websocket() = default;

  /// Queues one text frame (after `close`: completes with false).
  virtual void send(std::string text, completion done = {}) = 0;

  /// Queues text frames to go out in this order, one after another, with
  /// one completion for all: true once the last is on the socket, false
  /// when any never will be. One hop to the strand for the lot.
  virtual void send_batch(std::vector<std::string> texts, completion done = {})
    = 0;

  /// Sends a close frame with `reason` (normal closure) and closes. The
  /// reason is cut to the frame's 123 bytes. Frames queued before go out
  /// first; when they and the close handshake take longer than
  /// `websocket_close_timeout`, the connection is dropped.
  virtual void close(std::string reason = {}) = 0;

  /// False once the connection is closing or closed.
  virtual bool open() const = 0;

  /// Frames queued and not yet written.
  virtual std::size_t queued() const = 0;

  /// Runs `f` on the connection's strand; an exception from `f` is logged.
  virtual void post(std::function<void()> f) = 0;
};

/// What an upgraded connection calls, on its strand. An exception from a
/// handler is logged and the connection carries on.
struct websocket_handlers {
  /// A complete text message.
  std::function<void(const std::shared_ptr<websocket>&, std::string text)>
    on_message;
  /// A complete binary message (its bytes are not passed on). Without this
  /// handler a binary message closes the connection with the
  /// unsupported-data close code.
  std::function<void(const std::shared_ptr<websocket>&)> on_binary;
  /// The connection closed (either side, error, or server stop); runs once.
  /// Both handlers are dropped after it ran.
  std::function<void()> on_closed;
};

class session;

/// One request read from a connection and the way to answer it. Answer
/// exactly once, with `respond`, `respond_chunked` or `accept_websocket`,
/// from any thread; a second answer is logged and dropped. Copies refer to
/// the same request.
class responder {
public:
  /// The request (for a refused one: the header when it was read, else
  /// an empty request).
  const request& req() const;

  /// When the request was read.
  clock::time_point started() const;

  /// The client's address, "host:port" ("" when unknown).
  const std::string& remote() const;

  /// Whether the server is stopping (answers then close the connection).
  bool stopping() const;

  /// Sends `res` (the transport sets Server, keep-alive and the length,
  /// and drops the body for HEAD).
  void respond(response res) const;

  /// Sends `head` as a chunked response and returns its writer.
  std::shared_ptr<chunk_writer> respond_chunked(response_head head) const;

  /// Whether the request asks for a WebSocket upgrade.
  bool is_websocket_upgrade() const;

  /// Answers the request by upgrading the connection; the responder is
  /// answered. Returns null (and answers 400) when it is no upgrade request;
  /// null too for a second answer (logged). An accepted upgrade counts as
  /// answered once its handshake is written; the connection then lives
  /// until it closes, and `http_transport::stop` closes it.
  std::shared_ptr<websocket> accept_websocket(websocket_handlers h) const;

  /// Runs `f` on the connection's strand (from an engine callback, say);
  /// an exception from `f` is logged.
  void post(std::function<void()> f) const;

  /// Runs `on_expiry` on the connection's strand once `after` has passed,
  /// unless the request was answered by then (the answer cancels it): a
  /// timeout without a thread or an actor per request. One per request (a
  /// second call replaces the first). Call it on the strand (in the
  /// handler, or in a function given to `post`). The connection stays
  /// alive until it expires or the request is answered.
  void set_deadline(std::chrono::milliseconds after,
                    std::function<void()> on_expiry) const;

private:
  friend class session;
  explicit responder(std::shared_ptr<session> s);
  std::shared_ptr<session> s_;
  std::uint64_t serial_;
};

/// What the transport calls; both run on the connection's strand and
/// should return quickly.
struct transport_handlers {
  /// A request was read.
  std::function<void(responder r)> on_request;
  /// A request could not be read; answer it with `status` (400, 413 or
  /// 431), error code `code` and `message`.
  std::function<void(responder r, unsigned status, std::string code,
                     std::string message)>
    on_refused;
};

/// Listens and serves until `stop`. Uses `address`, `port`, `threads`,
/// `max_body` and the timeouts of `http_config`.
class http_transport {
public:
  /// Binds and starts serving. Throws `std::system_error` when it cannot
  /// bind.
  http_transport(const http_config& cfg, transport_handlers handlers);

  /// Stops (see `stop`).
  ~http_transport();

  http_transport(const http_transport&) = delete;
  http_transport& operator=(const http_transport&) = delete;

  /// The port it listens on.
  std::uint16_t port() const;

  /// The event loop of the I/O threads (e.g. for another socket the
  /// handlers wait on); it runs until `stop` is done.
  boost::asio::io_context& context();

  /// Graceful stop: stops accepting, waits up to `grace` for the requests
  /// in flight (streams included) to be answered, then closes every
  /// connection and waits for the sessions to end. Idempotent.
  void stop(std::chrono::milliseconds grace);

  struct core;

private:
  std::unique_ptr<core> core_;
};

} // namespace dcbd::http
