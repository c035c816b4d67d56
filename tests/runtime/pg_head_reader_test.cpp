// The read index's asynchronous query (runtime/pg_head_reader) against the
// real test server: it answers what the query returns, answers nothing on
// bad results, a killed connection, a slow server or no server at all, and
// comes back once the server does. It never blocks its loop meanwhile.
#include "runtime/pg_head_reader.hpp"

#include "tests/support/pg_fixture.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <thread>

namespace dcbd::test {
namespace {

using http::pg_head_reader;
using namespace std::chrono_literals;

// An event loop on a thread of its own, as the HTTP server runs one.
struct loop {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
    io.get_executor()};
  std::thread thread{[this] {
    io.run();
  }};

  ~loop() {
    work.reset();
    io.stop();
    thread.join();
  }
};

pg_head_reader::config config_for(std::string sql) {
  pg_head_reader::config c;
  c.dsn = test_dsn();
  c.sql = std::move(sql);
  c.timeout = 1000ms;
  c.retry = 100ms;
  return c;
}

// One round: its answer, or a failure of the test if it takes too long.
std::optional<std::uint64_t> fetch(pg_head_reader& r) {
  auto answer = std::make_shared<std::promise<std::optional<std::uint64_t>>>();
  auto f = answer->get_future();
  r.fetch([answer](std::optional<std::uint64_t> h) {
    answer->set_value(h);
  });
  if (f.wait_for(10s) != std::future_status::ready) {
    ADD_FAILURE() << "no answer within 10 s";
    return std::nullopt;
  }
  return f.get();
}

TEST(PgHeadReader, AnswersTheQueryOnOneConnection) {
  loop l;
  auto r = pg_head_reader::make(l.io, config_for("SELECT 42::bigint"));
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(fetch(*r), std::optional<std::uint64_t>{42});
  EXPECT_EQ(r->connects(), 1u) << "one connection for every round";
  EXPECT_NE(r->backend_pid(), 0);
  // Rounds one at a time: a second one while one is in flight is refused.
  auto slow = pg_head_reader::make(
    l.io, config_for("SELECT 1::bigint FROM pg_sleep(0.3)"));
  std::promise<std::optional<std::uint64_t>> first;
  slow->fetch([&](std::optional<std::uint64_t> h) {
    first.set_value(h);
  });
  EXPECT_FALSE(fetch(*slow).has_value());
  EXPECT_EQ(first.get_future().get(), std::optional<std::uint64_t>{1});
}

TEST(PgHeadReader, ResultsThatAreNoHeadAnswerNothing) {
  loop l;
  for (auto sql :
       {"SELECT NULL::bigint", "SELECT 'x'", "SELECT -1", "SELECT 1, 2",
        "SELECT 1 WHERE false", "SELECT * FROM no_such_table_here"}) {
    auto r = pg_head_reader::make(l.io, config_for(sql));
    EXPECT_FALSE(fetch(*r).has_value()) << sql;
  }
}

TEST(PgHeadReader, AKilledConnectionIsReplaced) {
  loop l;
  auto r = pg_head_reader::make(l.io, config_for("SELECT 7::bigint"));
  ASSERT_EQ(fetch(*r), std::optional<std::uint64_t>{7});
  auto pid = r->backend_pid();
  exec_sql("SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
  // The round on the dead connection answers nothing; a later one (after
  // `retry`) reconnects.
  std::optional<std::uint64_t> got;
  auto until = std::chrono::steady_clock::now() + 10s;
  while (!(got = fetch(*r)) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(got, std::optional<std::uint64_t>{7});
  EXPECT_EQ(r->connects(), 2u);
  EXPECT_NE(r->backend_pid(), pid);
}

TEST(PgHeadReader, ASlowServerOrNoServerAnswersNothingInTime) {
  loop l;
  auto slow = pg_head_reader::make(
    l.io, config_for("SELECT 1::bigint FROM pg_sleep(5)"));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(fetch(*slow).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s) << "the timeout ends it";
  // Nobody listens on port 1: refused at once.
  auto c = config_for("SELECT 1::bigint");
  c.dsn = "host=127.0.0.1 port=1 user=postgres connect_timeout=2";
  auto nowhere = pg_head_reader::make(l.io, c);
  EXPECT_FALSE(fetch(*nowhere).has_value());
  EXPECT_EQ(nowhere->connects(), 0u);
  // Its loop went on serving the others meanwhile.
  auto fine = pg_head_reader::make(l.io, config_for("SELECT 3::bigint"));
  EXPECT_EQ(fetch(*fine), std::optional<std::uint64_t>{3});
}

TEST(PgHeadReader, ClosingOrDestroyingAnswersTheRoundInFlight) {
  loop l;
  auto r = pg_head_reader::make(
    l.io, config_for("SELECT 1::bigint FROM pg_sleep(2)"));
  std::promise<std::optional<std::uint64_t>> answer;
  auto f = answer.get_future();
  r->fetch([&](std::optional<std::uint64_t> h) {
    answer.set_value(h);
  });
  std::this_thread::sleep_for(100ms);
  r->close();
  ASSERT_EQ(f.wait_for(1s), std::future_status::ready);
  EXPECT_FALSE(f.get().has_value());
  EXPECT_FALSE(fetch(*r).has_value()) << "closed for good";
}

} // namespace
} // namespace dcbd::test
