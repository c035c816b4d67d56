// `websocket` on a session: the connection upgraded from an HTTP request.
// The session's socket moves into a Beast WebSocket stream on the same
// strand; the session object stays alive (counted as a live connection,
// closed by `http_transport::stop`) until the WebSocket has closed.
//
// One read is always pending once the handshake is done; its failure (the
// peer closed, an error, the socket closed under it) is the one place the
// connection ends: queued frames complete with false, `on_closed` runs, the
// session is released. Frames and the close frame go out one at a time
// from a queue (a batch of frames: one after another). Beast's suggested server
// timeouts ping an idle peer and drop a dead one; a close handshake that does
// not finish within `websocket_close_timeout` drops the connection (and ends it
// outright if Beast's operations are stuck, see `close_timed_out`).
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

// Bytes a connection's write layer holds before the next frame waits for
// the socket.
constexpr std::size_t write_buffer_limit = 64 * 1024;

// The layer under Beast's WebSocket stream that coalesces writes: Beast
// writes one frame at a time and waits for each, so a batch of N frames
// was N `sendmsg` calls (and N reads for the client). Here a write copies
// its bytes and completes at once, and one socket write at a time takes
// everything gathered since the last (frames, and Beast's own pongs and
// close frame, in the order written). While corked (a batch is being
// written) bytes gather until `write_buffer_limit`; uncorked, they go out
// at once. The state is shared with the
// socket write in flight, so it outlives the layer when Beast's stream is
// destroyed with a write pending. A failed socket write closes the socket
// (the pending read fails and ends the connection) and fails every later
// write. Used on the connection's strand only.
class coalescing_stream {
public:
  using executor_type = beast::tcp_stream::executor_type;

  explicit coalescing_stream(net::ip::tcp::socket&& socket)
    : st_(std::make_shared<state>(std::move(socket))) {
    // nop
  }

  executor_type get_executor() noexcept {
    return st_->next.get_executor();
  }

  beast::tcp_stream& next_layer() noexcept {
    return st_->next;
  }

  /// Bytes written and not yet on the socket.
  std::size_t buffered() const noexcept {
    return st_->pending.size() + st_->out.size();
  }

  /// Corked, written bytes wait for the cork to come off or for
  /// `write_buffer_limit` of them.
  void cork(bool on) {
    st_->corked = on;
    flush(st_);
  }

  /// Runs after every socket write (on the strand), so a writer waiting for
  /// `buffered()` to fall can go on.
  void on_drained(std::function<void()> f) {
    st_->drained = std::move(f);
  }

  template <class MutableBuffers, class Handler>
  auto async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    return st_->next.async_read_some(buffers, std::forward<Handler>(handler));
  }

  template <class ConstBuffers, class Handler>
  auto async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    return net::async_initiate<Handler, void(beast::error_code, std::size_t)>(
      [st = st_](auto h, const ConstBuffers& b) {
        auto n = net::buffer_size(b);
        beast::error_code ec = st->error;
        if (ec) {
          n = 0;
        } else {
          auto at = st->pending.size();
          st->pending.resize(at + n);
          net::buffer_copy(net::buffer(st->pending.data() + at, n), b);
          flush(st);
        }
        net::post(st->next.get_executor(),
                  beast::bind_front_handler(std::move(h), ec, n));
      },
      handler, buffers);
  }

  // Beast's close ends here once the close handshake is done: the bytes
  // still buffered (the close frame among them) go out first.
  template <class Handler>
  friend void async_teardown(beast::role_type role, coalescing_stream& s,
                             Handler&& handler) {
    auto st = s.st_;
    auto h
      = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler));
    st->after_flush.push_back([st, role, h] {
      using beast::websocket::async_teardown;
      async_teardown(role, st->next.socket(), std::move(*h));
    });
    st->corked = false;
    flush(st);
    if (!st->flushing)
      run_after_flush(*st);
  }

private:
  struct state {
    explicit state(net::ip::tcp::socket&& socket) : next(std::move(socket)) {
      // nop
    }

    beast::tcp_stream next;
    // Written since the socket write in flight began; that write's bytes.
    std::string pending, out;
    bool flushing = false;
    bool corked = false;
    beast::error_code error;
    std::function<void()> drained;
    std::vector<std::function<void()>> after_flush;
  };

  static void run_after_flush(state& st) {
    auto fs = std::move(st.after_flush);
    st.after_flush.clear();
    for (auto& f : fs)
      f();
  }

  static void flush(const std::shared_ptr<state>& st) {
    if (st->flushing || st->pending.empty() || st->error
        || (st->corked && st->pending.size() < write_buffer_limit))
      return;
    st->flushing = true;
    std::swap(st->out, st->pending);
    net::async_write(st->next, net::buffer(st->out),
                     [st](beast::error_code ec, std::size_t) {
                       st->flushing = false;
                       st->out.clear();
                       if (ec && !st->error) {
                         st->error = ec;
                         st->pending.clear();
                         beast::error_code ignored;
                         st->next.socket().close(ignored);
                       }
                       flush(st);
                       if (!st->flushing)
                         run_after_flush(*st);
                       if (st->drained)
                         st->drained();
                     });
  }

  std::shared_ptr<state> st_;
};

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
    std::vector<std::string> texts;
    texts.push_back(std::move(text));
    send_batch(std::move(texts), std::move(done));
  }

  void send_batch(std::vector<std::string> texts, completion done) override {
    auto n = texts.size();
    queued_ += n;
    net::post(ex_, [self = shared_from_this(), texts = std::move(texts),
                    done = std::move(done), n]() mutable {
      if (self->closing_ || n == 0) {
        self->queued_ -= n;
        return complete(done, n == 0 && !self->closing_);
      }
      item it;
      it.frames = std::move(texts);
      it.done = std::move(done);
      self->queue_.push_back(std::move(it));
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
      ws_->next_layer().on_drained([weak = weak_from_this()] {
        if (auto self = weak.lock())
          self->on_drained();
      });
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
  // Text frames written one after another with one completion, or the
  // close frame.
  struct item {
    enum kind_t { text, close } kind = text;
    std::vector<std::string> frames;
    // The next frame to write.
    std::size_t next = 0;
    completion done;
    std::string reason;
    bws::close_code code = bws::close_code::normal;

    std::size_t unwritten() const {
      return kind == text ? frames.size() - next : 0;
    }
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
    item it;
    it.kind = item::close;
    it.reason = reason;
    it.code = code;
    queue_.push_back(std::move(it));
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

  // The write layer holds enough: the next frame waits for the socket.
  bool layer_full() const {
    return ws_->next_layer().buffered() >= write_buffer_limit;
  }

  void on_drained() {
    if (finished_ || !ws_ || layer_full())
      return;
    if (waiting_) {
      waiting_ = false;
      return write_next();
    }
    pump();
  }

  void pump() {
    if (writing_ || !accepted_ || finished_ || queue_.empty() || layer_full())
      return;
    writing_ = true;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    if (current_.kind == item::text) {
      ws_->text(true);
      ws_->next_layer().cork(true);
      write_next();
    } else {
      ws_->next_layer().cork(false);
      ws_->async_close(bws::close_reason{current_.code, current_.reason},
                       [self = shared_from_this()](beast::error_code ec) {
                         self->on_write(ec);
                       });
    }
  }

  void write_next() {
    ws_->async_write(net::buffer(current_.frames[current_.next]),
                     [self = shared_from_this()](beast::error_code ec,
                                                 std::size_t) {
                       self->on_write(ec);
                     });
  }

  void on_write(beast::error_code ec) {
    if (current_.kind == item::text) {
      --queued_;
      ++current_.next;
      if (!ec && !finished_ && current_.unwritten() > 0) {
        if (!layer_full())
          return write_next();
        waiting_ = true;
        return;
      }
      queued_ -= current_.unwritten();
    }
    writing_ = false;
    auto it = std::move(current_);
    if (it.kind == item::text)
      complete(it.done, !ec);
    // A failed write ends the connection (the read fails next); after the
    // close frame nothing more goes out.
    if (ec)
      return drop();
    if (it.kind != item::text)
      return;
    // The frames gathered go out when nothing more is queued to join them.
    pump();
    if (!writing_ && ws_)
      ws_->next_layer().cork(false);
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
        queued_ -= it.unwritten();
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
  std::optional<bws::stream<coalescing_stream>> ws_;
  beast::flat_buffer rd_buf_;
  net::steady_timer close_timer_;
  std::deque<item> queue_;
  item current_;
  bool accepted_ = false;
  bool writing_ = false;
  // A batch waits for the write layer to drain.
  bool waiting_ = false;
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
