// Internal to the transport (runtime/http_transport.cpp,
// runtime/http_chunk_writer.cpp and runtime/http_websocket.cpp); include it
// nowhere else. `core` holds the acceptor, the I/O threads and the counts a
// graceful stop waits on; `session` is one connection on its strand: it
// reads a request, hands it to the application with a `responder`, writes
// the answer, and reads the next while keep-alive holds. Everything a
// session (or its chunk writer, or its WebSocket) touches runs on the
// session's strand; the public calls only post there. An upgraded session
// hands its socket to a `session_websocket`, which keeps the session (and
// so its count) alive until the WebSocket has closed.
#pragma once

#include "runtime/http_transport.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dcbd::http {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

// The network boundary logs what it catches and carries on.
inline void log_error(std::string_view where, std::string_view what) {
  std::cerr << "dcbd http: " << where << ": " << what << std::endl;
}

// Runs `f`; logs whatever it throws.
template <class F>
void guarded(std::string_view where, F&& f) noexcept {
  try {
    f();
  } catch (const std::exception& e) {
    log_error(where, e.what());
  } catch (...) {
    log_error(where, "unknown exception");
  }
}

// -- core ---------------------------------------------------------------------

struct http_transport::core {
  http_config cfg;
  transport_handlers handlers;
  net::io_context ioc;
  // Keeps the I/O threads running while every session waits for the
  // application (no socket operation pending) until stop() is done.
  net::executor_work_guard<net::io_context::executor_type> work;
  tcp::acceptor acceptor;
  net::steady_timer accept_retry;
  std::vector<std::thread> threads;
  std::atomic<bool> stopping{false};
  bool stopped = false;
  // Requests read and not yet answered; sessions alive.
  std::mutex mtx;
  std::condition_variable cv;
  std::size_t in_flight = 0;
  std::vector<std::weak_ptr<session>> sessions;
  std::size_t live_sessions = 0;

  core(const http_config& c, transport_handlers h)
    : cfg(c)
    , handlers(std::move(h))
    , ioc(static_cast<int>(std::max<std::size_t>(cfg.threads, 1)))
    , work(ioc.get_executor())
    , acceptor(net::make_strand(ioc))
    , accept_retry(acceptor.get_executor()) {
    // nop
  }

  void accept();

  void request_started() {
    std::lock_guard<std::mutex> guard{mtx};
    ++in_flight;
  }

  void request_finished() {
    std::lock_guard<std::mutex> guard{mtx};
    --in_flight;
    cv.notify_all();
  }
};

using core = http_transport::core;

// -- session ------------------------------------------------------------------

class session_writer;
class session_websocket;

// Closes an upgraded connection because the server stops (on the strand;
// runtime/http_websocket.cpp).
void stop_websocket(const std::shared_ptr<session_websocket>& ws);

class session : public std::enable_shared_from_this<session> {
public:
  session(core& srv, tcp::socket socket)
    : srv_(srv)
    , live_(srv)
    , remote_(address_of(socket))
    , stream_(std::move(socket))
    , executor_(stream_.get_executor())
    , deadline_(executor_) {
    // nop
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->read_header();
    });
  }

  // Closes the connection (from any thread).
  void close() {
    post([self = shared_from_this()] {
      if (auto ws = self->ws_.lock())
        return stop_websocket(ws);
      self->shut();
    });
  }

  template <class F>
  void post(F f) {
    net::post(executor_, [f = std::move(f)]() mutable {
      guarded("handler", f);
    });
  }

  // -- for responders ---------------------------------------------------------

  const request& req() const {
    return req_;
  }

  clock::time_point started() const {
    return started_;
  }

  const std::string& remote() const {
    return remote_;
  }

  bool stopping() const {
    return srv_.stopping;
  }

  // Claims the one answer of request `serial`; false (logged) for a second
  // answer or one to a request already done.
  bool claim(std::uint64_t serial) {
    if (serial == serial_.load() && !answered_.exchange(true))
      return true;
    log_error("answer", "a second answer to one request was dropped");
    return false;
  }

  void respond(std::uint64_t serial, response res) {
    if (!claim(serial))
      return;
    auto p = std::make_shared<response>(std::move(res));
    post([self = shared_from_this(), p] {
      self->write_response(p);
    });
  }

  std::shared_ptr<chunk_writer> respond_chunked(std::uint64_t serial,
                                                response_head head);

  // Runs `on_expiry` on the strand after `after` if request `serial` has no
  // answer by then; an answer cancels it. On the strand.
  void set_deadline(std::uint64_t serial, std::chrono::milliseconds after,
                    std::function<void()> on_expiry) {
    deadline_armed_ = true;
    deadline_.expires_after(after);
    deadline_.async_wait([self = shared_from_this(), serial,
                          f = std::move(on_expiry)](beast::error_code ec) {
      if (ec || serial != self->serial_.load() || self->answered_.load())
        return;
      self->deadline_armed_ = false;
      guarded("deadline", f);
    });
  }

  // The request has its answer: drop the deadline (and what its handler
  // holds) now rather than when it would expire. On the strand.
  void clear_deadline() {
    if (!deadline_armed_)
      return;
    deadline_armed_ = false;
    deadline_.cancel();
  }

  bool is_websocket_upgrade() const;

  std::shared_ptr<websocket> accept_websocket(std::uint64_t serial,
                                              websocket_handlers h);

private:
  friend class session_writer;
  friend class session_websocket;

  // "host:port" of the peer, "" when the socket has none (any more).
  static std::string address_of(const tcp::socket& socket) {
    beast::error_code ec;
    auto ep = socket.remote_endpoint(ec);
    if (ec)
      return {};
    auto host = ep.address().to_string();
    if (ep.address().is_v6())
      host = "[" + host + "]";
    return host + ":" + std::to_string(ep.port());
  }

  // -- reading ----------------------------------------------------------------

  void read_header() {
    if (srv_.stopping)
      return shut();
    parser_.emplace();
    parser_->body_limit(srv_.cfg.max_body);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(srv_.cfg.idle_timeout);
    bhttp::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec)
          return self->on_read_error(ec);
        self->stream_.expires_after(self->srv_.cfg.request_timeout);
        bhttp::async_read(self->stream_, self->buffer_, *self->parser_,
                          [self](beast::error_code ec, std::size_t) {
                            self->on_read(ec);
                          });
      });
  }

  // Starts the answer to the request just read (or refused).
  responder begin(bool header_done) {
    srv_.request_started();
    started_ = clock::now();
    req_ = header_done ? parser_->release() : request{};
    ++serial_;
    answered_ = false;
    return responder{shared_from_this()};
  }

  void on_read(beast::error_code ec) {
    if (ec)
      return on_read_error(ec);
    auto r = begin(true);
    keep_alive_ = req_.keep_alive();
    try {
      srv_.handlers.on_request(r);
    } catch (const std::exception& e) {
      log_error("request handler", e.what());
      respond(serial_, internal_error());
    }
  }

  void on_read_error(beast::error_code ec) {
    // A request cut short by a limit still gets an answer, then the
    // connection closes: the rest of the body is not read.
    unsigned status = 400;
    std::string code = "bad_request";
    std::string message = "malformed HTTP request: " + ec.message();
    if (ec == bhttp::error::body_limit) {
      status = 413;
      code = "payload_too_large";
      message = "the request body exceeds " + std::to_string(srv_.cfg.max_body)
                + " bytes";
    } else if (ec == bhttp::error::header_limit) {
      status = 431;
      message = "the request header is too large";
    } else if (ec == beast::error::timeout || ec == bhttp::error::end_of_stream
               || ec == bhttp::error::partial_message || ec == net::error::eof
               || ec == net::error::connection_reset
               || ec == net::error::operation_aborted
               || !stream_.socket().is_open()) {
      return shut();
    }
    auto r = begin(status == 413 || parser_->is_header_done());
    keep_alive_ = false;
    try {
      srv_.handlers.on_refused(r, status, std::move(code), std::move(message));
    } catch (const std::exception& e) {
      log_error("refusal handler", e.what());
      respond(serial_, internal_error());
    }
  }

  // The last-resort answer when a handler threw past the application.
  response internal_error() const {
    response res{bhttp::status::internal_server_error, 11};
    res.set(bhttp::field::content_type, "application/json");
    res.body() = R"({"code":"internal","message":"the handler failed"})";
    return res;
  }

  // -- writing ----------------------------------------------------------------

  void write_response(const std::shared_ptr<response>& res) {
    clear_deadline();
    res->version(11);
    res->set(bhttp::field::server, "dcbd");
    if (srv_.stopping)
      keep_alive_ = false;
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    if (req_.method() == bhttp::verb::head)
      res->body().clear();
    stream_.expires_after(srv_.cfg.write_timeout);
    bhttp::async_write(stream_, *res,
                       [self = shared_from_this(), res](beast::error_code ec,
                                                        std::size_t) {
                         self->done(!ec);
                       });
  }

  // The answer is out (or failed): the next request, or close.
  void done(bool ok) {
    srv_.request_finished();
    if (!ok || !keep_alive_)
      return shut();
    read_header();
  }

  void shut() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  // Counts the session as live (see `http_transport::stop`), from before
  // its socket, strand and timer exist until after they are destroyed.
  class live_count {
  public:
    explicit live_count(core& srv) : srv_(srv) {
      std::lock_guard<std::mutex> guard{srv_.mtx};
      ++srv_.live_sessions;
    }

    live_count(const live_count&) = delete;
    live_count& operator=(const live_count&) = delete;

    ~live_count() {
      std::lock_guard<std::mutex> guard{srv_.mtx};
      --srv_.live_sessions;
      srv_.cv.notify_all();
    }

  private:
    core& srv_;
  };

  core& srv_;
  // Declared before everything that belongs to the io_context: the last
  // reference to a session may go on any thread (a subscription's sink,
  // say), and once the count is 0 the stopping thread destroys the
  // io_context.
  live_count live_;
  // Set once, before the socket moves into `stream_`.
  std::string remote_;
  beast::tcp_stream stream_;
  // The strand (kept apart: an upgrade moves the socket out of `stream_`).
  net::any_io_executor executor_;
  // A request's deadline (`set_deadline`); armed until it fires or the
  // request is answered.
  net::steady_timer deadline_;
  bool deadline_armed_ = false;
  // The WebSocket this connection was upgraded to, if any.
  std::weak_ptr<session_websocket> ws_;
  beast::flat_buffer buffer_;
  // Where a chunk writer's close detection reads to (and discards).
  std::array<char, 64> watch_buf_{};
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  request req_;
  bool keep_alive_ = false;
  clock::time_point started_;
  // The request being answered, and whether it has its answer.
  std::atomic<std::uint64_t> serial_{0};
  std::atomic<bool> answered_{false};
  friend class responder;
};

} // namespace dcbd::http
