// Test support: the test server's streaming-replication standby (`./dev pg
// standby`), for the read replica tests.
#pragma once

#include "store/pg_replica.hpp"
#include "tests/support/pg_fixture.hpp"

#include <chrono>
#include <cstdint>
#include <string>

namespace dcbd::test {

/// The DSN of the test server's standby ($DCBD_TEST_PG_READ_DSN); "" when
/// there is none.
std::string test_read_dsn();

/// Whether the tests run under CI (CI=true): a test that needs the standby
/// then fails without one instead of skipping.
bool under_ci();

/// Runs `sql` (no parameters) on the standby; returns the first column of
/// the first row as text, or "" when there is no row.
std::string exec_standby_sql(const std::string& sql);

/// Whether the standby takes connections and answers.
bool standby_answers();

/// Waits until the standby has replayed everything the primary has written
/// when this is called; false when it has not within `within`.
bool standby_caught_up(std::chrono::milliseconds within
                       = std::chrono::seconds{30});

/// Pauses the standby's replay and waits until it has paused; false if it
/// does not.
bool pause_replay();

/// Resumes the standby's replay (harmless when it runs).
void resume_replay();

/// Runs `./dev pg standby <what>` (start or stop) through $DCBD_TEST_DEV;
/// false when there is no such script or it failed.
bool standby_ctl(const std::string& what);

/// Whether `standby_ctl` can work ($DCBD_TEST_DEV is set).
bool have_standby_ctl();

/// A port on 127.0.0.1 nothing listens on.
std::uint16_t closed_port();

/// A schema of its own (PgSchemaTest) and the standby: skipped without one
/// (failed under CI); makes sure the standby runs and replays, whatever an
/// earlier test left behind.
class ReplicaTest : public PgSchemaTest {
protected:
  void SetUp() override;
  void TearDown() override;

  /// A `replica_config` for the standby: `wait`, and a short backoff so
  /// that tests see a failed standby come back soon.
  replica_config
  replica(std::chrono::milliseconds wait = std::chrono::milliseconds{20}) const;

  std::string read_dsn_;
};

} // namespace dcbd::test
