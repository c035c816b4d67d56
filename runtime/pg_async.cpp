#include "runtime/pg_async.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <libpq-fe.h>

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

namespace dcbd::http {

namespace net = boost::asio;
using clock = std::chrono::steady_clock;

// -- pg_connection ------------------------------------------------------------

// Everything runs on `strand`. Handlers hold the connection weakly and carry
// the connection's generation, so those of a dropped connection do nothing.
struct pg_connection::state {
  state(net::io_context& io, config c, pg_connection& owner)
    : cfg(std::move(c))
    , strand(net::make_strand(io))
    , sd(strand)
    , timer(strand)
    , owner(owner) {
    // nop
  }

  ~state() {
    release_socket();
    if (conn)
      PQfinish(conn);
    if (pending)
      std::exchange(pending, nullptr)(nullptr);
  }

  config cfg;
  net::strand<net::io_context::executor_type> strand;
  net::posix::stream_descriptor sd;
  net::steady_timer timer;
  pg_connection& owner;
  std::weak_ptr<pg_connection> self;
  PGconn* conn = nullptr;
  bool connected = false;
  bool closed = false;
  // What the connection is sending or waiting for: its setup, preparing
  // the statement, or the statement itself.
  enum class phase { setup, prepare, execute } now = phase::execute;
  bool set_up = false;
  // Statement text -> name, on the current connection.
  std::unordered_map<std::string, std::string> names;
  // The connection's generation and the statement's number.
  std::uint64_t gen = 0;
  std::uint64_t round = 0;
  // The statement in flight (or waiting for the connection).
  std::string sql;
  std::vector<std::string> params;
  pg_callback pending;
  pg_result_ptr result;
  bool bad = false;
  clock::time_point retry_at{};

  void exec(std::string s, std::vector<std::string> p, pg_callback done) {
    if (pending || closed)
      return done(nullptr);
    sql = std::move(s);
    params = std::move(p);
    pending = std::move(done);
    result.reset();
    bad = false;
    arm_timer();
    if (connected)
      return start();
    if (conn)
      return; // connecting: starts once connected
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

  // Answers the statement in flight: with its result, unless it went wrong.
  void complete() {
    timer.cancel();
    auto done = std::exchange(pending, nullptr);
    auto r = bad ? nullptr : std::move(result);
    result.reset();
    sql.clear();
    params.clear();
    if (done)
      done(std::move(r));
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
    set_up = false;
    names.clear();
    owner.prepared_ = 0;
    ++gen;
    bad = true;
    owner.pid_ = 0;
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
        ++owner.connects_;
        owner.pid_ = PQbackendPID(conn);
        if (pending)
          start();
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

  // Sends the next step of the statement in flight: the connection's
  // setup, preparing the statement, or the statement.
  void start() {
    if (!set_up && !cfg.setup.empty()) {
      now = phase::setup;
      if (!PQsendQuery(conn, cfg.setup.c_str()))
        return fail();
      return flush();
    }
    auto named = names.find(sql);
    if (named == names.end() && names.size() < cfg.max_prepared) {
      now = phase::prepare;
      auto name = "dcbd_" + std::to_string(names.size() + 1);
      if (!PQsendPrepare(conn, name.c_str(), sql.c_str(),
                         static_cast<int>(params.size()), nullptr))
        return fail();
      return flush();
    }
    now = phase::execute;
    std::vector<const char*> values;
    values.reserve(params.size());
    for (auto& p : params)
      values.push_back(p.c_str());
    auto n = static_cast<int>(values.size());
    auto sent = named != names.end()
                  ? PQsendQueryPrepared(conn, named->second.c_str(), n,
                                        values.data(), nullptr, nullptr, 0)
                  : PQsendQueryParams(conn, sql.c_str(), n, nullptr,
                                      values.data(), nullptr, nullptr, 0);
    if (!sent)
      return fail();
    flush();
  }

  // A step before the statement finished (`ok`: without an error).
  void stepped(bool ok) {
    if (now == phase::setup) {
      if (!ok)
        return fail(); // a connection without its setup is not used
      set_up = true;
      return start();
    }
    if (!ok) // a statement that cannot be prepared would not run either
      return complete();
    names.emplace(sql, "dcbd_" + std::to_string(names.size() + 1));
    owner.prepared_ = names.size();
    start();
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
        if (now != phase::execute) {
          auto ok = !bad;
          bad = false;
          return stepped(ok);
        }
        if (!result)
          bad = true;
        return complete();
      }
      if (now != phase::execute) {
        auto status = PQresultStatus(res);
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
          bad = true;
        PQclear(res);
        continue;
      }
      take(res);
    }
    wait(net::posix::descriptor_base::wait_read, [](state& st) {
      st.receive();
    });
  }

  // One statement gives one result; anything else is not an answer.
  void take(PGresult* res) {
    pg_result_ptr owned{res, [](const ::pg_result* r) {
                          PQclear(const_cast<PGresult*>(r));
                        }};
    auto status = PQresultStatus(res);
    if (result || (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK))
      bad = true;
    else
      result = std::move(owned);
  }
};

pg_connection::pg_connection(net::io_context& io, config cfg)
  : st_(std::make_unique<state>(io, std::move(cfg), *this)) {
  // nop
}

pg_connection::~pg_connection() = default;

std::shared_ptr<pg_connection> pg_connection::make(net::io_context& io,
                                                   config cfg) {
  std::shared_ptr<pg_connection> c{new pg_connection(io, std::move(cfg))};
  c->st_->self = c;
  return c;
}

void pg_connection::exec(std::string sql, std::vector<std::string> params,
                         pg_callback done) {
  // Weakly: the owner alone decides when the connection goes.
  net::dispatch(st_->strand, [w = weak_from_this(), sql = std::move(sql),
                              params = std::move(params),
                              done = std::move(done)]() mutable {
    if (auto s = w.lock())
      return s->st_->exec(std::move(sql), std::move(params), std::move(done));
    done(nullptr);
  });
}

void pg_connection::post(std::function<void()> f) {
  net::post(st_->strand, std::move(f));
}

void pg_connection::close() {
  net::dispatch(st_->strand, [w = weak_from_this()] {
    if (auto s = w.lock()) {
      s->st_->closed = true;
      s->st_->fail();
    }
  });
}

// -- pg_connection_pool -------------------------------------------------------

pg_connection_pool::pg_connection_pool(config cfg) : cfg_(std::move(cfg)) {
  // nop
}

std::shared_ptr<pg_connection_pool>
pg_connection_pool::make(net::io_context& io, config cfg) {
  std::shared_ptr<pg_connection_pool> p{new pg_connection_pool(cfg)};
  auto n = std::max<std::size_t>(cfg.size, 1);
  for (std::size_t i = 0; i < n; ++i) {
    p->conns_.push_back(pg_connection::make(io, cfg.connection));
    p->free_.push_back(n - 1 - i); // the first connection first
  }
  return p;
}

void pg_connection_pool::exec(std::string sql, std::vector<std::string> params,
                              pg_callback done) {
  std::unique_lock guard{mu_};
  if (closed_ || (free_.empty() && line_.size() >= cfg_.max_waiting)) {
    guard.unlock();
    return done(nullptr);
  }
  job j{std::move(sql), std::move(params), std::move(done)};
  if (free_.empty()) {
    line_.push_back(std::move(j));
    return;
  }
  auto i = free_.back();
  free_.pop_back();
  guard.unlock();
  run(i, std::move(j));
}

void pg_connection_pool::run(std::size_t i, job j) {
  // The connection goes back (to the next in line) before the caller's
  // callback runs, so the next statement is on its way meanwhile.
  conns_[i]->exec(std::move(j.sql), std::move(j.params),
                  [w = weak_from_this(), i,
                   done = std::move(j.done)](pg_result_ptr r) {
                    if (auto p = w.lock())
                      p->release(i);
                    done(std::move(r));
                  });
}

void pg_connection_pool::release(std::size_t i) {
  std::unique_lock guard{mu_};
  if (line_.empty() || closed_) {
    free_.push_back(i);
    return;
  }
  auto j = std::make_shared<job>(std::move(line_.front()));
  line_.pop_front();
  guard.unlock();
  // Later, not inside the callback of the statement that just finished: a
  // connection that fails at once (waiting out `retry`) would otherwise
  // answer the whole line in one deepening call chain.
  conns_[i]->post([w = weak_from_this(), i, j] {
    if (auto p = w.lock())
      return p->run(i, std::move(*j));
    j->done(nullptr);
  });
}

void pg_connection_pool::close() {
  std::deque<job> line;
  {
    std::lock_guard guard{mu_};
    closed_ = true;
    line.swap(line_);
  }
  for (auto& j : line)
    j.done(nullptr);
  for (auto& c : conns_)
    c->close();
}

std::size_t pg_connection_pool::running() const {
  std::lock_guard guard{mu_};
  return conns_.size() - free_.size();
}

std::size_t pg_connection_pool::waiting() const {
  std::lock_guard guard{mu_};
  return line_.size();
}

} // namespace dcbd::http
