// The connection pool against a real PostgreSQL: reuse, bounds, broken
// connections, error translation.
#include "store/pg_pool.hpp"

#include "tests/support/pg_fixture.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

namespace dcbd::test {
namespace {

int backend_of(pg_pool& pool) {
  return pool.with_connection([](pg_pool::lease& l) {
    return l.conn().backendpid();
  });
}

pg_config config(std::size_t size) {
  pg_config cfg;
  cfg.dsn = test_dsn();
  cfg.pool_size = size;
  return cfg;
}

TEST(PgPool, ReusesAnIdleConnection) {
  pg_pool pool{config(1)};
  auto first = backend_of(pool);
  EXPECT_EQ(backend_of(pool), first);
  EXPECT_EQ(pool.reconnects(), 0u);
}

TEST(PgPool, NeverOpensMoreThanItsSize) {
  pg_pool pool{config(2)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  std::atomic<bool> got{false};
  auto third = std::async(std::launch::async, [&] {
    auto c = pool.acquire();
    got = true;
    pool.give_back(std::move(c), false);
  });
  // The third borrower waits for a connection to come back.
  EXPECT_EQ(third.wait_for(std::chrono::milliseconds{300}),
            std::future_status::timeout);
  EXPECT_FALSE(got);
  pool.give_back(std::move(a), false);
  third.get();
  EXPECT_TRUE(got);
  pool.give_back(std::move(b), false);
  EXPECT_EQ(pool.reconnects(), 1u) << "two connections, one after the first";
}

TEST(PgPool, DropsABrokenConnectionAndOpensAFreshOne) {
  pg_pool pool{config(1)};
  auto victim = backend_of(pool);
  exec_sql("SELECT pg_terminate_backend(" + std::to_string(victim) + ")");
  try {
    pool.query("SELECT 1", {});
    FAIL() << "a terminated backend must fail the statement";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::unavailable) << e.what();
  }
  auto fresh = backend_of(pool);
  EXPECT_NE(fresh, victim);
  EXPECT_EQ(pool.reconnects(), 1u);
}

TEST(PgPool, SqlErrorsAreInternalAndKeepTheConnection) {
  pg_pool pool{config(1)};
  auto before = backend_of(pool);
  try {
    pool.query("SELECT * FROM no_such_table_anywhere", {});
    FAIL() << "bad SQL must throw";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::internal) << e.what();
  }
  EXPECT_EQ(backend_of(pool), before);
  auto r = pool.query("SELECT $1::int + $2::int", {"2", "3"});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0][0].as<int>(), 5);
}

TEST(PgPool, UnreachableServerIsUnavailableAfterTheConnectTimeout) {
  pg_config cfg;
  cfg.dsn = "host=127.0.0.1 port=1 user=postgres connect_timeout=1";
  cfg.connect_timeout = std::chrono::milliseconds{100};
  pg_pool pool{cfg};
  try {
    backend_of(pool);
    FAIL() << "port 1 has no PostgreSQL";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::unavailable) << e.what();
  }
  // The failed attempt gave its slot back.
  try {
    backend_of(pool);
    FAIL();
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::unavailable);
  }
}

} // namespace
} // namespace dcbd::test
