// One session per connection, on its own strand: read a request (header
// under the idle timeout, the rest under the request timeout), answer it,
// and read the next while the client keeps the connection alive. Engine
// callbacks run on actor threads and post the answer back to the strand.
// Streaming reads run the blocking engine stream on a thread of their own
// and hand each chunk to the strand, waiting for it to be written: memory
// stays bounded by the credit window however slow the client.
#include "runtime/http_server.hpp"

#include "actors/engine.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "runtime/wire_codec.hpp"
#include "store/error.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace dcbd {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using http::json;

namespace {

using clock = std::chrono::steady_clock;
using request = bhttp::request<bhttp::string_body>;
using response = bhttp::response<bhttp::string_body>;

constexpr const char* json_type = "application/json";
constexpr const char* msgpack_type = "application/msgpack";
constexpr const char* ndjson_type = "application/x-ndjson";

unsigned status_of(errc code) {
  switch (code) {
    case errc::none:
      return 200;
    case errc::invalid_argument:
      return 400;
    case errc::append_condition_failed:
      return 409;
    case errc::overloaded:
    case errc::unavailable:
      return 503;
    case errc::internal:
      return 500;
  }
  return 500;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// Decodes %XX and '+' of a URL query component.
std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0
               && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else if (s[i] == '%') {
      throw store_error(errc::invalid_argument,
                        "the URL has a malformed percent-encoding");
    } else {
      out += s[i];
    }
  }
  return out;
}

// The value of parameter `key` in the query string `qs`, decoded.
std::optional<std::string> parameter(std::string_view qs,
                                     std::string_view key) {
  while (!qs.empty()) {
    auto amp = qs.find('&');
    auto pair = qs.substr(0, amp);
    auto eq = pair.find('=');
    if (url_decode(pair.substr(0, eq)) == key)
      return url_decode(eq == std::string_view::npos ? std::string_view{}
                                                     : pair.substr(eq + 1));
    if (amp == std::string_view::npos)
      break;
    qs.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

bool has_type(const request& req, bhttp::field f, std::string_view type) {
  auto v = req[f];
  return std::string_view{v.data(), v.size()}.find(type)
         != std::string_view::npos;
}

} // namespace

// -- server state -------------------------------------------------------------

class session;

struct server_core {
  engine& eng;
  std::shared_ptr<node_metrics> metrics;
  http_config cfg;
  net::io_context ioc;
  // Keeps the I/O threads running while every session waits for the
  // engine (no socket operation pending) until stop() is done with them.
  net::executor_work_guard<net::io_context::executor_type> work;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  std::atomic<bool> stopping{false};
  bool stopped = false;
  // Requests read and not yet answered; sessions alive.
  std::mutex mtx;
  std::condition_variable cv;
  std::size_t in_flight = 0;
  std::vector<std::weak_ptr<session>> sessions;
  std::size_t live_sessions = 0;
  std::atomic<std::size_t> streams{0};

  server_core(engine& e, std::shared_ptr<node_metrics> m, http_config c)
    : eng(e)
    , metrics(std::move(m))
    , cfg(std::move(c))
    , ioc(static_cast<int>(std::max<std::size_t>(cfg.threads, 1)))
    , work(ioc.get_executor())
    , acceptor(net::make_strand(ioc)) {
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

// -- session ------------------------------------------------------------------

class session : public std::enable_shared_from_this<session> {
public:
  session(server_core& srv, tcp::socket socket)
    : srv_(srv)
    , stream_(std::move(socket)) {
    std::lock_guard<std::mutex> guard{srv_.mtx};
    ++srv_.live_sessions;
  }

  ~session() {
    std::lock_guard<std::mutex> guard{srv_.mtx};
    --srv_.live_sessions;
    srv_.cv.notify_all();
  }

  void start() {
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&session::read_header,
                                            shared_from_this()));
  }

  // Closes the connection (from any thread).
  void close() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      self->stream_.close();
    });
  }

private:
  // -- reading ----------------------------------------------------------------

  void read_header() {
    if (srv_.stopping) {
      stream_.close();
      return;
    }
    parser_.emplace();
    parser_->body_limit(srv_.cfg.max_body);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(srv_.cfg.idle_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             beast::bind_front_handler(&session::on_header,
                                                       shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec)
      return on_read_error(ec);
    stream_.expires_after(srv_.cfg.request_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&session::on_read,
                                                shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec)
      return on_read_error(ec);
    srv_.request_started();
    started_ = clock::now();
    req_ = parser_->release();
    keep_alive_ = req_.keep_alive();
    try {
      route();
    } catch (const store_error& e) {
      fail(e.code(), e.what());
    } catch (const std::exception& e) {
      fail(errc::internal, e.what());
    }
  }

  void on_read_error(beast::error_code ec) {
    // A request cut short by a limit still gets an answer, then the
    // connection closes: the rest of the body is not read.
    if (ec == bhttp::error::body_limit) {
      begin_error_reply(route_label_of_target(), 413,
                        "the request body exceeds "
                          + std::to_string(srv_.cfg.max_body) + " bytes");
      return;
    }
    if (ec == bhttp::error::header_limit) {
      begin_error_reply("other", 431, "the request header is too large");
      return;
    }
    if (ec == beast::error::timeout || ec == bhttp::error::end_of_stream
        || ec == bhttp::error::partial_message || ec == net::error::eof
        || ec == net::error::connection_reset
        || ec == net::error::operation_aborted || !stream_.socket().is_open()) {
      stream_.close();
      return;
    }
    // Anything else is a malformed request.
    begin_error_reply("other", 400, "malformed HTTP request: " + ec.message());
  }

  std::string route_label_of_target() {
    if (!parser_ || !parser_->is_header_done())
      return "other";
    auto t = parser_->get().target();
    auto path = std::string_view{t.data(), t.size()};
    path = path.substr(0, path.find('?'));
    for (auto r : {"/append", "/v1/append"})
      if (path == r)
        return r;
    return "other";
  }

  void begin_error_reply(std::string route, unsigned status,
                         std::string message) {
    srv_.request_started();
    started_ = clock::now();
    keep_alive_ = false;
    route_ = std::move(route);
    error_reply(status, status == 413 ? "payload_too_large" : "bad_request",
                std::move(message));
  }

  // -- routing ----------------------------------------------------------------

  void route() {
    auto target = std::string_view{req_.target().data(), req_.target().size()};
    auto q = target.find('?');
    auto path = target.substr(0, q);
    query_string_ = q == std::string_view::npos ? std::string{}
                                                : target.substr(q + 1);
    msgpack_out_ = has_type(req_, bhttp::field::accept, msgpack_type);
    auto method = req_.method();
    struct entry {
      std::string_view path;
      bhttp::verb verb;
      void (session::*handler)();
    };
    static const entry routes[] = {
      {"/read", bhttp::verb::get, &session::dcb_read},
      {"/append", bhttp::verb::post, &session::dcb_append},
      {"/v1/append", bhttp::verb::post, &session::v1_append},
      {"/v1/read", bhttp::verb::get, &session::v1_read},
      {"/v1/head", bhttp::verb::get, &session::v1_head},
      {"/healthz", bhttp::verb::get, &session::healthz},
      {"/readyz", bhttp::verb::get, &session::readyz},
    };
    for (auto& r : routes) {
      if (r.path != path)
        continue;
      route_ = std::string{path};
      if (method != r.verb
          && !(r.verb == bhttp::verb::get && method == bhttp::verb::head)) {
        allow_ = std::string{bhttp::to_string(r.verb)};
        error_reply(405, "method_not_allowed",
                    std::string{bhttp::to_string(method)} + " " + route_
                      + " is not allowed; use " + allow_);
        return;
      }
      (this->*r.handler)();
      return;
    }
    route_ = "other";
    error_reply(404, "not_found",
                "no route " + std::string{path}
                  + "; see /read, /append, /v1/append, /v1/read, /v1/head");
  }

  // The request body as a JSON document (JSON or msgpack).
  json body() {
    if (has_type(req_, bhttp::field::content_type, msgpack_type))
      return http::from_msgpack(req_.body(), "body", srv_.cfg.max_body);
    return http::parse_json(req_.body(), "body");
  }

  query query_parameter() {
    auto text = parameter(query_string_, "query");
    if (!text)
      return query::all();
    return http::parse_query(http::parse_json(*text, "query"), "query");
  }

  read_options options_parameter() {
    auto text = parameter(query_string_, "options");
    if (!text)
      return {};
    return http::parse_read_options(http::parse_json(*text, "options"),
                                    "options");
  }

  // Runs `f` on this session's strand, from an engine callback.
  template <class F>
  void on_strand(F f) {
    net::post(stream_.get_executor(),
              [self = shared_from_this(), f = std::move(f)]() mutable {
                try {
                  f();
                } catch (const std::exception& e) {
                  self->fail(errc::internal, e.what());
                }
              });
  }

  void dcb_read() {
    auto q = query_parameter();
    auto options = options_parameter();
    srv_.eng.read(std::move(q), options,
                  [self = shared_from_this()](caf::expected<read_result> r) {
                    self->on_strand([self, r = std::move(r)]() mutable {
                      if (!r) {
                        self->read_done(code_of(r.error()), 0);
                        return self->fail(r.error());
                      }
                      self->read_done(errc::none, r->events.size());
                      json out = json::array();
                      for (auto& e : r->events)
                        out.push_back(
                          http::to_json(e, false, self->msgpack_out_));
                      self->reply(200, out);
                    });
                  });
  }

  void dcb_append() {
    auto req = http::parse_append(body());
    auto t0 = clock::now();
    srv_.eng.append(
      std::move(req.events), std::move(req.condition),
      [self = shared_from_this(), t0](caf::expected<append_ack> r) {
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                    clock::now() - t0)
                    .count();
        self->on_strand([self, r = std::move(r), us]() mutable {
          auto code = r ? errc::none : code_of(r.error());
          self->append_done(code);
          if (!r && code != errc::append_condition_failed)
            return self->fail(r.error());
          self->reply(200, json{{"durationInMicroseconds", us},
                                {"appendConditionFailed", !r}});
        });
      });
  }

  void v1_append() {
    auto req = http::parse_append(body());
    srv_.eng.append(std::move(req.events), std::move(req.condition),
                    [self = shared_from_this()](caf::expected<append_ack> r) {
                      self->on_strand([self, r = std::move(r)]() mutable {
                        self->append_done(r ? errc::none : code_of(r.error()));
                        if (!r)
                          return self->fail(r.error());
                        self->reply(200,
                                    json{{"first_position", r->first_position},
                                         {"last_position", r->last_position}});
                      });
                    });
  }

  void v1_head() {
    srv_.eng.head([self = shared_from_this()](caf::expected<std::uint64_t> r) {
      self->on_strand([self, r = std::move(r)]() mutable {
        if (!r)
          return self->fail(r.error());
        self->reply(200, json{{"head", *r}});
      });
    });
  }

  void healthz() {
    reply(200, json{{"status", "ok"}});
  }

  void readyz() {
    srv_.eng.head([self = shared_from_this()](caf::expected<std::uint64_t> r) {
      self->on_strand([self, r = std::move(r)]() mutable {
        if (!r)
          return self->reply(503, json{{"status", "unavailable"},
                                       {"message", message_of(r.error())}});
        self->reply(200, json{{"status", "ready"}, {"head", *r}});
      });
    });
  }

  void v1_read();

  // -- answering --------------------------------------------------------------

  void append_done(errc code) {
    if (srv_.metrics)
      srv_.metrics->append_finished(code, clock::now() - started_);
  }

  void read_done(errc code, std::size_t events) {
    if (srv_.metrics)
      srv_.metrics->read_finished(code, events);
  }

  void fail(const caf::error& err) {
    fail(code_of(err), message_of(err));
  }

  void fail(errc code, std::string message) {
    error_reply(status_of(code), std::string{to_string(code)},
                std::move(message));
  }

  void error_reply(unsigned status, std::string code, std::string message) {
    reply(status, json{{"code", std::move(code)}, {"message", message}});
  }

  void reply(unsigned status, const json& body) {
    auto res = std::make_shared<response>();
    res->version(11);
    res->result(status);
    res->set(bhttp::field::server, "dcbd");
    if (msgpack_out_) {
      res->set(bhttp::field::content_type, msgpack_type);
      res->body() = http::to_msgpack(body);
    } else {
      res->set(bhttp::field::content_type, json_type);
      res->body() = http::dump(body);
    }
    if (!allow_.empty())
      res->set(bhttp::field::allow, allow_);
    if (status == 503)
      res->set(bhttp::field::retry_after, "1");
    if (srv_.stopping)
      keep_alive_ = false;
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    if (req_.method() == bhttp::verb::head)
      res->body().clear();
    // Counted before the client can see the answer.
    count_request(status);
    stream_.expires_after(srv_.cfg.write_timeout);
    bhttp::async_write(stream_, *res,
                       [self = shared_from_this(), res](beast::error_code ec,
                                                        std::size_t) {
                         self->on_written(ec);
                       });
  }

  void on_written(beast::error_code ec) {
    finish_request();
    if (ec || !keep_alive_) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      stream_.close();
      return;
    }
    read_header();
  }

  void count_request(unsigned status) {
    if (srv_.metrics)
      srv_.metrics->http_finished(route_.empty() ? "other" : route_, status,
                                  clock::now() - started_);
  }

  void finish_request() {
    allow_.clear();
    msgpack_out_ = false;
    srv_.request_finished();
  }

  // -- streaming --------------------------------------------------------------

  // Runs `f` on the strand and waits for the write it starts; false if the
  // connection failed or the server stopped meanwhile.
  template <class Start>
  bool write_and_wait(Start start) {
    auto done = std::make_shared<std::promise<bool>>();
    auto result = done->get_future();
    net::post(stream_.get_executor(), [self = shared_from_this(), done,
                                       start = std::move(start)]() mutable {
      self->stream_.expires_after(self->srv_.cfg.write_timeout);
      start([done](beast::error_code ec, std::size_t) {
        done->set_value(!ec);
      });
    });
    // The write times out on its own (write_timeout); this only guards
    // against a server that stopped running handlers.
    while (result.wait_for(std::chrono::milliseconds{100})
           != std::future_status::ready) {
      if (srv_.ioc.stopped())
        return false;
    }
    return result.get();
  }

  bool write_chunk(std::string data) {
    auto buf = std::make_shared<std::string>(std::move(data));
    return write_and_wait([self = shared_from_this(), buf](auto handler) {
      net::async_write(
        self->stream_,
        bhttp::make_chunk(net::const_buffer(buf->data(), buf->size())),
        [buf, handler](beast::error_code ec, std::size_t n) mutable {
          handler(ec, n);
        });
    });
  }

  std::string line(const json& j) const {
    if (msgpack_out_)
      return http::to_msgpack(j);
    return http::dump(j) + "\n";
  }

  void run_stream(query q, read_options options);

  server_core& srv_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  request req_;
  std::string query_string_;
  std::string route_;
  std::string allow_;
  bool keep_alive_ = false;
  bool msgpack_out_ = false;
  clock::time_point started_;
  // For a streaming response.
  std::optional<bhttp::response<bhttp::empty_body>> stream_head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> stream_sr_;
};

void session::v1_read() {
  auto q = query_parameter();
  auto options = options_parameter();
  if (srv_.streams.fetch_add(1) >= srv_.cfg.max_streams) {
    --srv_.streams;
    return error_reply(503, "overloaded",
                       "too many streaming reads ("
                         + std::to_string(srv_.cfg.max_streams)
                         + "); retry later");
  }
  if (srv_.metrics)
    srv_.metrics->open_streams().Increment();
  std::thread([self = shared_from_this(), q = std::move(q), options] {
    self->run_stream(q, options);
  }).detach();
}

void session::run_stream(query q, read_options options) {
  // The head goes out before the first event: the status is 200 from here
  // on, and a failure later is the last line, {"error": {code, message}}.
  bool ok = write_and_wait([self = shared_from_this()](auto handler) {
    auto& head = self->stream_head_.emplace();
    head.version(11);
    head.result(bhttp::status::ok);
    head.set(bhttp::field::server, "dcbd");
    head.set(bhttp::field::content_type,
             self->msgpack_out_ ? msgpack_type : ndjson_type);
    head.keep_alive(self->keep_alive_ && !self->srv_.stopping);
    head.chunked(true);
    auto& sr = self->stream_sr_.emplace(head);
    bhttp::async_write_header(self->stream_, sr, std::move(handler));
  });
  std::uint64_t events = 0;
  errc code = errc::none;
  std::string message;
  std::uint64_t head = 0;
  if (ok) {
    try {
      stream_options chunking;
      chunking.chunk_events = srv_.cfg.stream_chunk_events;
      auto r = srv_.eng.stream(
        std::move(q), options,
        [&](std::vector<sequenced_event>& chunk) {
          std::string out;
          for (auto& e : chunk)
            out += line(http::to_json(e, true, msgpack_out_));
          events += chunk.size();
          if (!write_chunk(std::move(out)))
            throw std::runtime_error("the client went away");
        },
        4, chunking);
      if (r) {
        head = r->head;
      } else {
        code = code_of(r.error());
        message = message_of(r.error());
      }
    } catch (const std::exception& e) {
      ok = false;
      code = errc::unavailable;
      message = e.what();
    }
  }
  read_done(code, events);
  count_request(ok ? 200 : 499);
  if (ok) {
    auto last = code == errc::none
                  ? json{{"head", head}}
                  : json{{"error",
                          {{"code", std::string{to_string(code)}},
                           {"message", message}}}};
    ok = write_chunk(line(last));
  }
  if (ok)
    ok = write_and_wait([self = shared_from_this()](auto handler) {
      net::async_write(self->stream_, bhttp::make_chunk_last(),
                       std::move(handler));
    });
  --srv_.streams;
  if (srv_.metrics)
    srv_.metrics->open_streams().Decrement();
  net::post(stream_.get_executor(), [self = shared_from_this(), ok] {
    self->stream_sr_.reset();
    self->stream_head_.reset();
    if (!ok)
      self->keep_alive_ = false;
    self->on_written(ok ? beast::error_code{} : net::error::broken_pipe);
  });
}

// -- server -------------------------------------------------------------------

struct http_server::impl : server_core {
  using server_core::server_core;
};

void server_core::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec,
                                                      tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || stopping)
        return;
    } else {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay{true}, ignored);
      auto s = std::make_shared<session>(*this, std::move(socket));
      {
        std::lock_guard<std::mutex> guard{mtx};
        std::erase_if(sessions, [](auto& w) {
          return w.expired();
        });
        sessions.push_back(s);
      }
      s->start();
    }
    if (!stopping)
      accept();
  });
}

http_server::http_server(engine& eng, std::shared_ptr<node_metrics> metrics,
                         http_config cfg)
  : impl_(std::make_unique<impl>(eng, std::move(metrics), std::move(cfg))) {
  auto& d = *impl_;
  auto endpoint = tcp::endpoint{net::ip::make_address(d.cfg.address),
                                d.cfg.port};
  d.acceptor.open(endpoint.protocol());
  d.acceptor.set_option(net::socket_base::reuse_address(true));
  d.acceptor.bind(endpoint);
  d.acceptor.listen(net::socket_base::max_listen_connections);
  d.accept();
  for (std::size_t i = 0; i < std::max<std::size_t>(d.cfg.threads, 1); ++i)
    d.threads.emplace_back([&d] {
      d.ioc.run();
    });
}

http_server::~http_server() {
  stop(std::chrono::milliseconds{0});
}

std::uint16_t http_server::port() const {
  return impl_->acceptor.local_endpoint().port();
}

void http_server::stop(std::chrono::milliseconds grace) {
  auto& d = *impl_;
  if (d.stopped)
    return;
  d.stopped = true;
  d.stopping = true;
  net::post(d.acceptor.get_executor(), [&d] {
    beast::error_code ignored;
    d.acceptor.close(ignored);
  });
  std::unique_lock<std::mutex> lock{d.mtx};
  d.cv.wait_for(lock, grace, [&d] {
    return d.in_flight == 0;
  });
  // Idle connections and whatever outlived the grace period are closed;
  // calls still running end on their own (the engine answers every call
  // within its timeout), and their sessions with them.
  auto open = d.sessions;
  lock.unlock();
  for (auto& w : open)
    if (auto s = w.lock())
      s->close();
  lock.lock();
  d.cv.wait(lock, [&d] {
    return d.live_sessions == 0;
  });
  lock.unlock();
  d.ioc.stop();
  for (auto& t : d.threads)
    t.join();
}

} // namespace dcbd
