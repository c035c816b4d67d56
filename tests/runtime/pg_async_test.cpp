// The HTTP threads' asynchronous PostgreSQL connections (runtime/pg_async)
// against the real test server: statements with parameters, error results
// that keep the connection, and the pool: at most `size` statements at
// once on that many connections, a bounded line, and closing.
#include "runtime/pg_async.hpp"

#include "tests/support/pg_fixture.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dcbd::test {
namespace {

using http::pg_connection;
using http::pg_connection_pool;
using http::pg_result_ptr;
using namespace std::chrono_literals;

// An event loop on two threads, as the HTTP server runs one.
struct loop {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
    io.get_executor()};
  std::vector<std::thread> threads;

  loop() {
    for (int i = 0; i < 2; ++i)
      threads.emplace_back([this] {
        io.run();
      });
  }

  ~loop() {
    work.reset();
    io.stop();
    for (auto& t : threads)
      t.join();
  }
};

pg_connection::config config_for() {
  pg_connection::config c;
  c.dsn = test_dsn();
  c.timeout = 5000ms;
  c.retry = 100ms;
  return c;
}

// The first column of the first row, as text ("<null>" for no result).
std::string first(const pg_result_ptr& r) {
  auto* res = const_cast<PGresult*>(r.get());
  if (!r || PQntuples(res) < 1)
    return "<null>";
  return PQgetvalue(res, 0, 0);
}

// Runs `exec` and waits for its answer (a failure of the test past 10 s).
template <class Exec>
pg_result_ptr await(Exec exec) {
  auto answer = std::make_shared<std::promise<pg_result_ptr>>();
  auto f = answer->get_future();
  exec([answer](pg_result_ptr r) {
    answer->set_value(std::move(r));
  });
  if (f.wait_for(10s) != std::future_status::ready) {
    ADD_FAILURE() << "no answer within 10 s";
    return nullptr;
  }
  return f.get();
}

TEST(PgConnection, ParametersTravelAsTextAndComeBackIntact) {
  loop l;
  auto c = pg_connection::make(l.io, config_for());
  std::string odd = "it's \"quoted\", {braced}, \\ and ü";
  auto r = await([&](auto done) {
    c->exec("SELECT $1::text || '|' || ($2::bigint + 1)::text", {odd, "41"},
            done);
  });
  ASSERT_TRUE(r);
  EXPECT_EQ(first(r), odd + "|42");
  // A statement without rows answers too (a command's completion).
  auto cmd = await([&](auto done) {
    c->exec("SET application_name = 'pg_async_test'", {}, done);
  });
  EXPECT_TRUE(cmd);
  EXPECT_EQ(c->connects(), 1u);
}

TEST(PgConnection, AnErrorAnswersNothingAndKeepsTheConnection) {
  loop l;
  auto c = pg_connection::make(l.io, config_for());
  ASSERT_EQ(first(await([&](auto done) {
              c->exec("SELECT 1", {}, done);
            })),
            "1");
  auto pid = c->backend_pid();
  for (auto sql : {"SELECT * FROM no_such_table_here", "SELECT 1/0",
                   "SELECT $1::bigint"}) {
    EXPECT_FALSE(await([&](auto done) {
      c->exec(sql, {"not a number"}, done);
    }))
      << sql;
  }
  EXPECT_EQ(first(await([&](auto done) {
              c->exec("SELECT 2", {}, done);
            })),
            "2");
  EXPECT_EQ(c->connects(), 1u) << "errors do not cost the connection";
  EXPECT_EQ(c->backend_pid(), pid);
}

TEST(PgConnection, PreparesStatementsAfterItsSetupAndAgainAfterAReconnect) {
  loop l;
  auto cfg = config_for();
  cfg.setup = "SET plan_cache_mode = force_custom_plan";
  cfg.max_prepared = 2;
  auto c = pg_connection::make(l.io, cfg);
  auto run = [&](const std::string& sql, std::vector<std::string> params) {
    return first(await([&](auto done) {
      c->exec(sql, std::move(params), done);
    }));
  };
  EXPECT_EQ(run("SHOW plan_cache_mode", {}), "force_custom_plan");
  // Three texts, twice each: two are prepared, the third runs unprepared;
  // every answer is its own.
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(run("SELECT $1::int + 1", {"1"}), "2");
    EXPECT_EQ(run("SELECT $1::int + 2", {std::to_string(round)}),
              std::to_string(round + 2));
    EXPECT_EQ(run("SELECT $1::text || 'x'", {"a"}), "ax");
  }
  EXPECT_EQ(c->prepared(), 2u);
  // A statement that cannot be prepared answers nothing, and takes no room.
  EXPECT_EQ(run("SELECT * FROM no_such_table_here WHERE $1", {"t"}), "<null>");
  EXPECT_EQ(c->prepared(), 2u);
  auto prepared_server_side
    = run("SELECT count(*)::text FROM pg_prepared_statements WHERE name LIKE "
          "'dcbd_%'",
          {});
  EXPECT_EQ(prepared_server_side, "2");
  // A new connection runs its setup and prepares afresh.
  auto pid = c->backend_pid();
  exec_sql("SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
  std::string got;
  auto until = std::chrono::steady_clock::now() + 10s;
  while ((got = run("SELECT $1::int + 1", {"41"})) != "42"
         && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(got, "42");
  EXPECT_NE(c->backend_pid(), pid);
  EXPECT_EQ(c->prepared(), 1u);
  EXPECT_EQ(run("SHOW plan_cache_mode", {}), "force_custom_plan");
}

TEST(PgConnection, AConnectionWhoseSetupFailsIsNotUsed) {
  loop l;
  auto cfg = config_for();
  cfg.setup = "SET no_such_setting_here = 1";
  auto c = pg_connection::make(l.io, cfg);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(await([&](auto done) {
      c->exec("SELECT 1", {}, done);
    }));
    std::this_thread::sleep_for(120ms); // past `retry`: it connects again
  }
  EXPECT_GE(c->connects(), 2u);
  EXPECT_EQ(c->backend_pid(), 0) << "dropped";
}

TEST(PgConnectionPool, RunsAtMostSizeStatementsAtOnceOnThatManyConnections) {
  loop l;
  pg_connection_pool::config pc;
  pc.connection = config_for();
  pc.size = 2;
  auto pool = pg_connection_pool::make(l.io, pc);
  // Six slow statements: they take both connections and wait in line.
  std::mutex mu;
  std::multiset<std::string> pids;
  std::size_t most_running = 0;
  std::vector<std::future<void>> all;
  for (int i = 0; i < 6; ++i) {
    auto p = std::make_shared<std::promise<void>>();
    all.push_back(p->get_future());
    pool->exec("SELECT pg_backend_pid()::text FROM pg_sleep(0.1)", {},
               [&, p](pg_result_ptr r) {
                 {
                   std::lock_guard g{mu};
                   pids.insert(first(r));
                 }
                 p->set_value();
               });
    most_running = std::max(most_running, pool->running());
  }
  EXPECT_EQ(pool->running(), 2u);
  EXPECT_EQ(pool->waiting(), 4u);
  for (auto& f : all)
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(most_running, 2u);
  EXPECT_EQ(pids.count("<null>"), 0u) << "every statement answered";
  std::set<std::string> distinct{pids.begin(), pids.end()};
  EXPECT_EQ(distinct.size(), 2u) << "two connections, each used in turn";
  EXPECT_EQ(pool->waiting(), 0u);
  // The answers came back before the connections did: wait for them.
  auto until = std::chrono::steady_clock::now() + 5s;
  while (pool->running() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(pool->running(), 0u);
}

TEST(PgConnectionPool, AFullLineAndAClosedPoolAnswerNothingAtOnce) {
  loop l;
  pg_connection_pool::config pc;
  pc.connection = config_for();
  pc.size = 1;
  pc.max_waiting = 1;
  auto pool = pg_connection_pool::make(l.io, pc);
  std::promise<pg_result_ptr> running, waiting;
  pool->exec("SELECT 'slow' FROM pg_sleep(1)", {}, [&](pg_result_ptr r) {
    running.set_value(std::move(r));
  });
  pool->exec("SELECT 'next'", {}, [&](pg_result_ptr r) {
    waiting.set_value(std::move(r));
  });
  // The line holds one: a third is refused at once, on this thread.
  bool refused = false;
  pool->exec("SELECT 'third'", {}, [&](pg_result_ptr r) {
    refused = !r;
  });
  EXPECT_TRUE(refused);
  // Closing answers what runs and what waits with nothing, and every later
  // statement too.
  std::this_thread::sleep_for(100ms);
  pool->close();
  auto w = waiting.get_future();
  auto r = running.get_future();
  ASSERT_EQ(w.wait_for(5s), std::future_status::ready);
  ASSERT_EQ(r.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(w.get());
  EXPECT_FALSE(r.get());
  EXPECT_FALSE(await([&](auto done) {
    pool->exec("SELECT 1", {}, done);
  }));
}

TEST(PgConnectionPool, NoDatabaseAnswersAWholeLineWithNothing) {
  loop l;
  pg_connection_pool::config pc;
  pc.connection = config_for();
  pc.connection.dsn = "host=127.0.0.1 port=1 user=postgres connect_timeout=2";
  pc.connection.retry = 10s;
  pc.size = 1;
  pc.max_waiting = 5000;
  auto pool = pg_connection_pool::make(l.io, pc);
  constexpr int n = 5000;
  std::atomic<int> nothing{0}, something{0};
  std::promise<void> all;
  std::atomic<int> left{n};
  for (int i = 0; i < n; ++i)
    pool->exec("SELECT 1", {}, [&](pg_result_ptr r) {
      ++(r ? something : nothing);
      if (--left == 0)
        all.set_value();
    });
  ASSERT_EQ(all.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(nothing.load(), n);
  EXPECT_EQ(something.load(), 0);
  EXPECT_EQ(pool->connections()[0]->connects(), 0u);
}

} // namespace
} // namespace dcbd::test
