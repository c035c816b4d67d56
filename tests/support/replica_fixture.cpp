#include "tests/support/replica_fixture.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pqxx/pqxx>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

namespace dcbd::test {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string first_value(const std::string& dsn, const std::string& sql) {
  pqxx::connection conn{dsn};
  pqxx::nontransaction tx{conn};
  auto r = tx.exec(sql);
  if (r.empty() || r.columns() == 0 || r[0][0].is_null())
    return "";
  return r[0][0].c_str();
}

} // namespace

std::string test_read_dsn() {
  return env("DCBD_TEST_PG_READ_DSN");
}

bool under_ci() {
  return env("CI") == "true";
}

std::string exec_standby_sql(const std::string& sql) {
  return first_value(test_read_dsn(), sql);
}

bool standby_answers() {
  try {
    return exec_standby_sql("SELECT pg_is_in_recovery()") == "t";
  } catch (const std::exception&) {
    return false;
  }
}

bool standby_caught_up(std::chrono::milliseconds within) {
  auto lsn = first_value(test_dsn(), "SELECT pg_current_wal_lsn()");
  auto deadline = std::chrono::steady_clock::now() + within;
  do {
    try {
      if (exec_standby_sql("SELECT pg_last_wal_replay_lsn() >= '" + lsn
                           + "'::pg_lsn")
          == "t")
        return true;
    } catch (const std::exception&) {
      // Not up yet: look again.
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  } while (std::chrono::steady_clock::now() < deadline);
  return false;
}

bool pause_replay() {
  exec_standby_sql("SELECT pg_wal_replay_pause()");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  do {
    if (exec_standby_sql("SELECT pg_get_wal_replay_pause_state()") == "paused")
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  } while (std::chrono::steady_clock::now() < deadline);
  return false;
}

void resume_replay() {
  exec_standby_sql("SELECT pg_wal_replay_resume()");
}

bool have_standby_ctl() {
  return !env("DCBD_TEST_DEV").empty();
}

bool standby_ctl(const std::string& what) {
  auto dev = env("DCBD_TEST_DEV");
  if (dev.empty())
    return false;
  auto cmd = "'" + dev + "' pg standby " + what + " >/dev/null";
  return std::system(cmd.c_str()) == 0;
}

std::uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  std::uint16_t port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  if (fd >= 0)
    ::close(fd);
  return port;
}

void ReplicaTest::SetUp() {
  PgSchemaTest::SetUp();
  read_dsn_ = test_read_dsn();
  if (read_dsn_.empty()) {
    if (under_ci())
      FAIL() << "DCBD_TEST_PG_READ_DSN is not set: the read replica tests "
                "need the standby that ./dev test starts";
    GTEST_SKIP() << "no standby (DCBD_TEST_PG_READ_DSN); ./dev test starts "
                    "one";
  }
  // A test that stopped the standby or paused its replay and then failed
  // must not take the next one down with it.
  if (!standby_answers() && !standby_ctl("start"))
    FAIL() << "the standby at \"" << read_dsn_ << "\" does not answer";
  ASSERT_TRUE(standby_answers()) << "the standby does not answer";
  resume_replay();
}

void ReplicaTest::TearDown() {
  if (!read_dsn_.empty()) {
    if (!standby_answers())
      standby_ctl("start");
    try {
      resume_replay();
    } catch (const std::exception&) {
      // Down for good: the next test's SetUp reports it.
    }
  }
  PgSchemaTest::TearDown();
}

replica_config ReplicaTest::replica(std::chrono::milliseconds wait) const {
  replica_config rc;
  rc.dsn = read_dsn_;
  rc.wait = wait;
  rc.backoff_min = std::chrono::milliseconds{20};
  rc.backoff_max = std::chrono::milliseconds{200};
  return rc;
}

} // namespace dcbd::test
