// `websocket` on a session: the connection upgraded from an HTTP request.
// The session's socket moves into a Beast WebSocket stream on the same
// strand; the session object stays alive (counted as a live connection,
// closed by `http_transport::stop`) until the WebSocket has closed.
//
// One read is always pending once the handshake is done; its failure (the
// peer closed, an error, the socket closed under it) is the one place the
// connection ends: queued frames complete with false, `on_closed` runs, the
// session is released. Frames and the close frame go out one at a time
// from a queue. Beast's suggested server timeouts ping an idle peer and
// drop a dead one; a close handshake that does not finish within
// `websocket_close_timeout` drops the connection (and ends it outright if
// Beast's operations are stuck, see `close_timed_out`).
#include "runtime/http_session.hpp"

#include <boost/beast/websocket.hpp>

#include <deque>

namespace dcbd::http {

namespace bws = beast::websocket;

namespace {

// A close reason fits 123 bytes (the frame's limit); longer ones are cut at
// a UTF-8 character boundary.
std::string fit_reason(std::string reason) {
  constexpr std::size_t max = bws::reason_string::max_size_n;
  if (reason.size() <= max)
    return reason;
  auto n = max;
  while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80)
    --n;
  reason.resize(n);
  return reason;
}

} // namespace

class session_websocket final
  : public websocket,
    public std::enable_shared_from_this<session_websocket> {
public:
  session_websocket(std::shared_ptr<session> s, websocket_handlers h)
    : s_(std::move(s))
    , ex_(s_->executor_)
    , handlers_(std::move(h))
    , close_timer_(ex_) {
    // nop
  }

  // -- websocket --------------------------------------------------------------

  void send(std::string text, completion done) override {
    ++queued_;
    net::post(ex_, [self = shared_from_this(), text = std::move(text),
                    done = std::move(done)]() mutable {
      if (self->closing_) {
        --self->queued_;
        return complete(done, false);
      }
      self->queue_.push_back(item{item::text, std::move(text), std::move(done),
                                  bws::close_code::normal});
      self->pump();
    });
  }

  void close(std::string reason) override {
    open_ = false;
    net::post(ex_, [self = shared_from_this(),
                    reason = fit_reason(std::move(reason))] {
      self->start_close(bws::close_code::normal, reason);
    });
  }

  bool open() const override {
    return open_;
  }

  std::size_t queued() const override {
    return queued_;
  }

  void post(std::function<void()> f) override {
    net::post(ex_, [f = std::move(f)] {
      guarded("websocket post", f);
    });
  }

  // -- on the strand ----------------------------------------------------------

  // Moves the session's socket into the WebSocket stream and answers the
  // upgrade request.
  void start() {
    try {
      auto& s = *s_;
      s.stream_.expires_never();
      ws_.emplace(s.stream_.release_socket());
      s.ws_ = weak_from_this();
      ws_->set_option(
        bws::stream_base::timeout::suggested(beast::role_type::server));
      ws_->set_option(bws::stream_base::decorator([](bws::response_type& res) {
        res.set(bhttp::field::server, "dcbd");
      }));
      ws_->read_message_max(websocket_max_message);
      ws_->async_accept(s.req_,
                        [self = shared_from_this()](beast::error_code ec) {
                          self->on_accept(ec);
                        });
    } catch (const std::exception& e) {
      // Without a pending operation nothing would end the connection (or
      // its request, which a stop waits for).
      log_error("websocket upgrade", e.what());
      on_accept(net::error::operation_aborted);
    }
  }

  // Closes for a server stop ("going away").
  void stop() {
    open_ = false;
    start_close(bws::close_code::going_away, "server stopping");
  }

private:
  struct item {
    enum kind_t { text, close } kind;
    std::string data;
    completion done;
    bws::close_code code;
  };

  static void complete(completion& done, bool ok) {
    if (done)
      guarded("websocket completion", [&] {
        done(ok);
      });
  }

  void on_accept(beast::error_code ec) {
    // The upgrade is answered (or failed): no longer in flight.
    s_->srv_.request_finished();
    if (ec)
      return finish();
    accepted_ = true;
    if (s_->srv_.stopping)
      stop();
    read();
    pump();
  }

  void read() {
    ws_->async_read(rd_buf_, [self = shared_from_this()](beast::error_code ec,
                                                         std::size_t) {
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    if (ec)
      return finish();
    if (!ws_->got_text()) {
      rd_buf_.clear();
      if (!handlers_.on_binary) {
        start_close(bws::close_code::unknown_data,
                    "binary messages are not supported");
      } else if (!closing_) {
        guarded("websocket binary message handler", [&] {
          handlers_.on_binary(shared_from_this());
        });
      }
      return read();
    }
    auto text = beast::buffers_to_string(rd_buf_.data());
    rd_buf_.clear();
    // What arrives while closing is dropped.
    if (!closing_ && handlers_.on_message)
      guarded("websocket message handler", [&] {
        handlers_.on_message(shared_from_this(), std::move(text));
      });
    read();
  }

  void start_close(bws::close_code code, const std::string& reason) {
    if (closing_ || finished_)
      return;
    closing_ = true;
    open_ = false;
    queue_.push_back(item{item::close, reason, {}, code});
    close_timer_.expires_after(websocket_close_timeout);
    close_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec)
        self->close_timed_out();
    });
    pump();
  }

  // The close handshake did not finish in time: disconnect, which ends
  // the pending read. Beast 1.74 can also deadlock here: a read that fails
  // the connection (a protocol error from the peer) holds the read block
  // while it waits for the write block, which our close holds while it
  // waits for the read block, and neither touches the socket again. So if
  // nothing finished a moment after the disconnect, finish here and destroy
  // the stream: that drops the two suspended operations (and the
  // references to this WebSocket they hold); none of them will run.
  void close_timed_out() {
    drop();
    close_timer_.expires_after(websocket_stuck_timeout);
    close_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->finished_)
        return;
      log_error("websocket", "close handshake stuck; connection dropped");
      self->finish();
      self->ws_.reset();
    });
  }

  void pump() {
    if (writing_ || !accepted_ || finished_ || queue_.empty())
      return;
    writing_ = true;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    auto self = shared_from_this();
    if (current_.kind == item::text) {
      ws_->text(true);
      ws_->async_write(net::buffer(current_.data),
                       [self](beast::error_code ec, std::size_t) {
                         self->on_write(ec);
                       });
    } else {
      ws_->async_close(bws::close_reason{current_.code, current_.data},
                       [self](beast::error_code ec) {
                         self->on_write(ec);
                       });
    }
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    auto it = std::move(current_);
    if (it.kind == item::text) {
      --queued_;
      complete(it.done, !ec);
    }
    // A failed write ends the connection (the read fails next); after the
    // close frame nothing more goes out.
    if (ec)
      return drop();
    if (it.kind == item::text)
      pump();
  }

  // Disconnects at once; the pending read fails and finishes.
  void drop() {
    open_ = false;
    closing_ = true;
    if (ws_) {
      beast::error_code ignored;
      beast::get_lowest_layer(*ws_).socket().close(ignored);
    }
  }

  // The connection ended: what is queued fails, `on_closed` runs once,
  // the session goes.
  void finish() {
    if (finished_)
      return;
    finished_ = true;
    drop();
    close_timer_.cancel();
    // The write in flight (its data stays until its handler runs) completes
    // now: a stopping server may never run that handler, and a completion
    // often holds this WebSocket (a cycle nothing would break).
    if (writing_ && current_.kind == item::text) {
      auto done = std::move(current_.done);
      current_.done = nullptr;
      complete(done, false);
    }
    while (!queue_.empty()) {
      auto it = std::move(queue_.front());
      queue_.pop_front();
      if (it.kind == item::text) {
        --queued_;
        complete(it.done, false);
      }
    }
    auto h = std::move(handlers_);
    handlers_ = {};
    if (h.on_closed)
      guarded("websocket close handler", h.on_closed);
    s_.reset();
  }

  std::shared_ptr<session> s_;
  net::any_io_executor ex_;
  websocket_handlers handlers_;
  std::optional<bws::stream<beast::tcp_stream>> ws_;
  beast::flat_buffer rd_buf_;
  net::steady_timer close_timer_;
  std::deque<item> queue_;
  item current_{item::text, {}, {}, bws::close_code::normal};
  bool accepted_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool finished_ = false;
  std::atomic<bool> open_{true};
  std::atomic<std::size_t> queued_{0};
};

void stop_websocket(const std::shared_ptr<session_websocket>& ws) {
  ws->stop();
}

bool session::is_websocket_upgrade() const {
  return bws::is_upgrade(req_);
}

std::shared_ptr<websocket> session::accept_websocket(std::uint64_t serial,
                                                     websocket_handlers h) {
  if (!is_websocket_upgrade()) {
    response res{bhttp::status::bad_request, 11};
    res.set(bhttp::field::content_type, "application/json");
    res.body() = R"({"code":"invalid_argument","message":)"
                 R"("expected a WebSocket upgrade request"})";
    respond(serial, std::move(res));
    return nullptr;
  }
  if (!claim(serial))
    return nullptr;
  auto ws = std::make_shared<session_websocket>(shared_from_this(),
                                                std::move(h));
  post([self = shared_from_this(), ws] {
    self->clear_deadline();
    ws->start();
  });
  return ws;
}

} // namespace dcbd::http
