// `chunk_writer` on a session: a queue of head, chunks and last chunk,
// written one at a time on the session's strand. A failed write (the client
// went away, the write timed out) closes the connection and completes what
// is queued with false; `end` hands the connection back to the session.
//
// `watch_close` keeps one read pending on the raw socket while the response
// streams (bypassing the tcp_stream, so its timer stays the write timeout's):
// a request/response connection has nothing more to say until the response
// ended, so whatever completes that read (data, EOF, reset) means the client
// is gone or misbehaving. The read holds the writer only weakly: a writer
// dropped without `end` still ends its request, which closes the socket and
// so finishes the read.
#include "runtime/http_session.hpp"

#include <deque>

namespace dcbd::http {

// -- chunked writer -----------------------------------------------------------

class session_writer final
  : public chunk_writer,
    public std::enable_shared_from_this<session_writer> {
public:
  session_writer(std::shared_ptr<session> s, response_head head)
    : s_(std::move(s))
    , head_(std::move(head)) {
    // nop
  }

  // A stream dropped without `end` still ends its request.
  ~session_writer() override {
    if (!finished_ && started_)
      s_->post([s = s_] {
        s->done(false);
      });
  }

  // Queues the head (on the strand) for a claimed answer.
  void start() {
    started_ = true;
    s_->post([self = shared_from_this()] {
      auto& s = *self->s_;
      s.clear_deadline();
      if (s.srv_.stopping)
        s.keep_alive_ = false;
      self->head_.version(11);
      self->head_.set(bhttp::field::server, "dcbd");
      self->head_.keep_alive(s.keep_alive_);
      self->head_.chunked(true);
      self->queue_.push_front(item{item::head, {}, {}});
      self->pump();
    });
  }

  // A writer for an answer that was not claimed: it writes nothing.
  void refuse() {
    open_ = false;
    ended_ = true;
    finished_ = true;
  }

  void write(std::string data, completion done) override {
    ++queued_;
    s_->post([self = shared_from_this(), data = std::move(data),
              done = std::move(done)]() mutable {
      if (!self->open_ || self->ended_ || data.empty()) {
        --self->queued_;
        return complete(done, self->open_ && !self->ended_);
      }
      self->queue_.push_back(
        item{item::chunk, std::move(data), std::move(done)});
      self->pump();
    });
  }

  void end(completion done) override {
    s_->post([self = shared_from_this(), done = std::move(done)]() mutable {
      if (self->ended_)
        return complete(done, false);
      self->ended_ = true;
      if (!self->open_) {
        complete(done, false);
        return self->finish(false);
      }
      self->queue_.push_back(item{item::last, {}, std::move(done)});
      self->pump();
    });
  }

  void abort() override {
    s_->post([self = shared_from_this()] {
      if (!self->finished_)
        self->fail();
    });
  }

  bool open() const override {
    return open_;
  }

  void watch_close(std::function<void()> on_closed) override {
    s_->post([self = shared_from_this(), f = std::move(on_closed)]() mutable {
      self->watch(std::move(f));
    });
  }

  std::size_t queued() const override {
    return queued_;
  }

private:
  struct item {
    enum kind_t { head, chunk, last } kind;
    std::string data;
    completion done;
  };

  static void complete(completion& done, bool ok) {
    if (done)
      guarded("chunk completion", [&] {
        done(ok);
      });
  }

  void pump() {
    if (writing_ || queue_.empty() || !open_)
      return;
    writing_ = true;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    auto& stream = s_->stream_;
    stream.expires_after(s_->srv_.cfg.write_timeout);
    auto on_write = [self = shared_from_this()](beast::error_code ec,
                                                std::size_t) {
      self->on_write(ec);
    };
    switch (current_.kind) {
      case item::head:
        bhttp::async_write_header(stream, serializer_.emplace(head_),
                                  std::move(on_write));
        break;
      case item::chunk:
        net::async_write(stream, bhttp::make_chunk(net::buffer(current_.data)),
                         std::move(on_write));
        break;
      case item::last:
        net::async_write(stream, bhttp::make_chunk_last(), std::move(on_write));
        break;
    }
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    auto it = std::move(current_);
    if (it.kind == item::chunk)
      --queued_;
    if (ec) {
      complete(it.done, false);
      fail();
      if (it.kind == item::last)
        finish(false);
      return;
    }
    complete(it.done, true);
    if (it.kind == item::last)
      return finish(true);
    pump();
  }

  // The connection broke (or the stream was aborted): nothing more goes
  // out; what is queued completes with false, then `on_closed` runs.
  void fail() {
    open_ = false;
    s_->shut();
    while (!queue_.empty()) {
      auto it = std::move(queue_.front());
      queue_.pop_front();
      if (it.kind == item::chunk)
        --queued_;
      complete(it.done, false);
      if (it.kind == item::last)
        finish(false);
    }
    notify_closed();
  }

  void finish(bool ok) {
    if (finished_)
      return;
    finished_ = true;
    // Ended normally, `on_closed` never runs: drop it now, as it may hold
    // this writer (a failure runs it, which drops it too).
    if (ok)
      on_closed_ = nullptr;
    s_->done(ok);
  }

  // -- close detection --------------------------------------------------------

  void watch(std::function<void()> f) {
    if (watching_) {
      log_error("chunk writer", "watch_close was called twice; ignored");
      return;
    }
    watching_ = true;
    if (!open_) {
      // Failed (or refused) before: the client is gone already.
      on_closed_ = std::move(f);
      return notify_closed();
    }
    if (finished_)
      return; // Ended normally: nothing left to watch.
    on_closed_ = std::move(f);
    // The pending read would race the session's next request read.
    auto& s = *s_;
    s.keep_alive_ = false;
    if (!serializer_)
      head_.keep_alive(false);
    // Bytes already read past the request were sent by the client too.
    if (s.buffer_.size() > 0)
      return fail();
    s.stream_.socket().async_read_some(
      net::buffer(s.watch_buf_),
      net::bind_executor(s.stream_.get_executor(),
                         [w = weak_from_this(), keep = s_](beast::error_code,
                                                           std::size_t) {
                           if (auto self = w.lock())
                             self->on_watch();
                         }));
  }

  // The watch read completed: data, EOF, reset, or the socket was closed
  // under it (the response ended, the writer failed, the server stops).
  void on_watch() {
    if (finished_ && open_)
      return; // The response ended; the connection closes.
    if (open_)
      return fail();
    notify_closed();
  }

  void notify_closed() {
    if (!on_closed_)
      return;
    auto f = std::move(on_closed_);
    on_closed_ = nullptr;
    guarded("close handler", f);
  }

  std::shared_ptr<session> s_;
  response_head head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> serializer_;
  std::deque<item> queue_;
  item current_{item::chunk, {}, {}};
  bool writing_ = false;
  bool ended_ = false;
  bool finished_ = false;
  bool started_ = false;
  bool watching_ = false;
  std::function<void()> on_closed_;
  std::atomic<bool> open_{true};
  std::atomic<std::size_t> queued_{0};
};

std::shared_ptr<chunk_writer> session::respond_chunked(std::uint64_t serial,
                                                       response_head head) {
  auto w = std::make_shared<session_writer>(shared_from_this(),
                                            std::move(head));
  if (claim(serial))
    w->start();
  else
    w->refuse();
  return w;
}

} // namespace dcbd::http
