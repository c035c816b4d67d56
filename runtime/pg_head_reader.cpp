#include "runtime/pg_head_reader.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <libpq-fe.h>

#include <charconv>
#include <cstring>
#include <utility>

namespace dcbd::http {

namespace net = boost::asio;
using clock = std::chrono::steady_clock;
using callback = std::function<void(std::optional<std::uint64_t>)>;

// Everything runs on `strand`. Handlers hold the reader weakly and carry the
// connection's generation, so those of a dropped connection do nothing.
struct pg_head_reader::state {
  state(net::io_context& io, config c, pg_head_reader& owner)
    : cfg(std::move(c))
    , strand(net::make_strand(io))
    , sd(strand)
    , timer(strand)
    , reader(owner) {
    // nop
  }

  ~state() {
    release_socket();
    if (conn)
      PQfinish(conn);
    if (pending)
      std::exchange(pending, nullptr)(std::nullopt);
  }

  config cfg;
  net::strand<net::io_context::executor_type> strand;
  net::posix::stream_descriptor sd;
  net::steady_timer timer;
  pg_head_reader& reader;
  std::weak_ptr<pg_head_reader> self;
  PGconn* conn = nullptr;
  bool connected = false;
  bool closed = false;
  // The connection's generation and the round's number.
  std::uint64_t gen = 0;
  std::uint64_t round = 0;
  callback pending;
  std::optional<std::uint64_t> value;
  bool bad = false;
  clock::time_point retry_at{};

  void fetch(callback done) {
    if (pending || closed)
      return done(std::nullopt);
    pending = std::move(done);
    value.reset();
    bad = false;
    arm_timer();
    if (connected)
      return send();
    if (conn)
      return; // connecting: sends once connected
    if (clock::now() < retry_at)
      return complete();
    connect();
  }

  void arm_timer() {
    timer.expires_after(cfg.timeout);
    timer.async_wait([w = self, r = ++round](boost::system::error_code ec) {
      auto s = w.lock();
      if (ec || !s)
        return;
      auto& st = *s->st_;
      if (st.round != r || !st.pending)
        return;
      // A connection that does not answer in time is not asked again.
      st.drop();
      st.complete();
    });
  }

  // Answers the round in flight: with the value, unless it went wrong.
  void complete() {
    timer.cancel();
    auto done = std::exchange(pending, nullptr);
    auto h = bad ? std::nullopt : value;
    value.reset();
    if (done)
      done(h);
  }

  void fail() {
    drop();
    complete();
  }

  void release_socket() {
    if (!sd.is_open())
      return;
    boost::system::error_code ignored;
    sd.cancel(ignored);
    // libpq owns the socket: stop watching it without closing it.
    sd.release();
  }

  void drop() {
    release_socket();
    if (conn)
      PQfinish(conn);
    conn = nullptr;
    connected = false;
    ++gen;
    bad = true;
    reader.pid_ = 0;
    retry_at = clock::now() + cfg.retry;
  }

  // Waits until the socket is ready for `what`, then runs `next`.
  template <class Next>
  void wait(net::posix::descriptor_base::wait_type what, Next next) {
    sd.async_wait(what, [w = self, g = gen,
                         next](boost::system::error_code ec) mutable {
      auto s = w.lock();
      if (!s)
        return;
      auto& st = *s->st_;
      if (st.gen != g)
        return;
      if (ec)
        return st.fail();
      next(st);
    });
  }

  bool watch_socket() {
    release_socket();
    boost::system::error_code ec;
    sd.assign(PQsocket(conn), ec);
    return !ec;
  }

  void connect() {
    conn = PQconnectStart(cfg.dsn.c_str());
    if (!conn || PQstatus(conn) == CONNECTION_BAD)
      return fail();
    step(PGRES_POLLING_WRITING);
  }

  void step(PostgresPollingStatusType status) {
    switch (status) {
      case PGRES_POLLING_OK:
        if (PQsetnonblocking(conn, 1) != 0)
          return fail();
        connected = true;
        ++reader.connects_;
        reader.pid_ = PQbackendPID(conn);
        if (pending)
          send();
        return;
      case PGRES_POLLING_READING:
      case PGRES_POLLING_WRITING:
        // libpq may open another socket between steps (e.g. after a
        // refused SSL request): watch the current one.
        if (!watch_socket())
          return fail();
        return wait(status == PGRES_POLLING_READING
                      ? net::posix::descriptor_base::wait_read
                      : net::posix::descriptor_base::wait_write,
                    [](state& st) {
                      st.step(PQconnectPoll(st.conn));
                    });
      default:
        return fail();
    }
  }

  void send() {
    if (!PQsendQuery(conn, cfg.sql.c_str()))
      return fail();
    flush();
  }

  void flush() {
    auto r = PQflush(conn);
    if (r < 0)
      return fail();
    if (r == 1)
      return wait(net::posix::descriptor_base::wait_write, [](state& st) {
        st.flush();
      });
    wait(net::posix::descriptor_base::wait_read, [](state& st) {
      st.receive();
    });
  }

  void receive() {
    if (!PQconsumeInput(conn))
      return fail();
    while (!PQisBusy(conn)) {
      auto* res = PQgetResult(conn);
      if (!res) {
        // Answered whole; a connection that broke meanwhile goes.
        if (PQstatus(conn) != CONNECTION_OK)
          return fail();
        if (!value)
          bad = true;
        return complete();
      }
      take(res);
      PQclear(res);
    }
    wait(net::posix::descriptor_base::wait_read, [](state& st) {
      st.receive();
    });
  }

  void take(const PGresult* res) {
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || PQnfields(res) != 1 || PQgetisnull(res, 0, 0)) {
      bad = true;
      return;
    }
    const char* text = PQgetvalue(res, 0, 0);
    auto len = std::strlen(text);
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text, text + len, v);
    if (ec != std::errc{} || end != text + len)
      bad = true;
    else
      value = v;
  }
};

pg_head_reader::pg_head_reader(net::io_context& io, config cfg)
  : st_(std::make_unique<state>(io, std::move(cfg), *this)) {
  // nop
}

pg_head_reader::~pg_head_reader() = default;

std::shared_ptr<pg_head_reader> pg_head_reader::make(net::io_context& io,
                                                     config cfg) {
  std::shared_ptr<pg_head_reader> r{new pg_head_reader(io, std::move(cfg))};
  r->st_->self = r;
  return r;
}

void pg_head_reader::fetch(callback done) {
  // Weakly: the owner alone decides when the reader goes.
  net::dispatch(st_->strand,
                [w = weak_from_this(), done = std::move(done)]() mutable {
                  if (auto s = w.lock())
                    return s->st_->fetch(std::move(done));
                  done(std::nullopt);
                });
}

std::shared_ptr<read_index_leader> pg_head_reader::leader() {
  auto l = std::make_shared<read_index_leader>();
  l->post = [strand = st_->strand](std::function<void()> f) {
    net::post(strand, std::move(f));
  };
  l->fetch = [w = weak_from_this()](callback done) {
    if (auto s = w.lock())
      return s->fetch(std::move(done));
    done(std::nullopt);
  };
  return l;
}

void pg_head_reader::close() {
  net::dispatch(st_->strand, [w = weak_from_this()] {
    if (auto s = w.lock()) {
      s->st_->closed = true;
      s->st_->fail();
    }
  });
}

} // namespace dcbd::http
