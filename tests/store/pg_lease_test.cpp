// The read lease (store/pg_lease.hpp) against a real PostgreSQL: a holder
// trusts it only while no other writer can have committed. Every statement
// that writes events (the plain unconditional one, the append_group
// function, both with jobs, and the function's old signature that older
// builds call) waits the lease out and ends it, so at the moment another
// writer's append is acknowledged the holder no longer trusts its lease.
#include "store/pg_lease.hpp"

#include "store/pg_jobs.hpp"
#include "tests/support/pg_fixture.hpp"

#include <chrono>
#include <thread>

namespace dcbd::test {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

class ReadLease : public PgSchemaTest {
protected:
  // A lease on this test's schema (installed by `open_store` first).
  std::shared_ptr<read_lease> make_lease(std::chrono::milliseconds term,
                                         std::chrono::milliseconds quiet) {
    read_lease_config c;
    c.dsn = test_dsn();
    c.schema = schema_;
    c.term = term;
    c.quiet = quiet;
    return std::make_shared<read_lease>(std::move(c));
  }

  // A store that commits as the lease's writer.
  std::unique_ptr<pg_event_store>
  open_holder(const std::shared_ptr<read_lease>& lease) {
    auto cfg = test_config(schema_);
    cfg.lease = lease;
    return std::make_unique<pg_event_store>(cfg);
  }

  // Waits (up to 5 s) until `lease` is trusted.
  static bool await_held(const read_lease& lease) {
    auto deadline = clock::now() + 5s;
    while (clock::now() < deadline) {
      if (lease.index())
        return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  static append_request one(const std::string& tag, bool conditional,
                            bool with_job = false) {
    append_request r{{event{"E", {tag}, "x"}}, std::nullopt, {}};
    if (conditional)
      r.condition = append_condition{query{{query_item{{}, {tag}}}}, 0};
    if (with_job) {
      job_request j;
      j.kind = "k";
      r.jobs.push_back(j);
    }
    return r;
  }
};

TEST_F(ReadLease, ALoneWriterTakesItAndItCoversItsOwnCommits) {
  auto plain = open_store(); // installs the schema
  plain->append(one("before", false).events, std::nullopt);
  auto lease = make_lease(1000ms, 0ms);
  auto holder = open_holder(lease);
  ASSERT_TRUE(await_held(*lease));
  EXPECT_EQ(*lease->index(), 1u) << "the head when it was taken";
  for (int i = 0; i < 20; ++i) {
    auto r
      = holder->append_group({one("own:" + std::to_string(i), i % 2 == 0)});
    ASSERT_TRUE(r[0].ok()) << r[0].message;
    auto index = lease->index();
    ASSERT_TRUE(index) << "an own commit ended the lease";
    EXPECT_EQ(*index, r[0].last_position);
  }
  // Renewals go on while nobody else writes.
  std::this_thread::sleep_for(600ms);
  EXPECT_TRUE(lease->index());
  auto s = lease->stats();
  EXPECT_EQ(s.acquisitions, 1u);
  EXPECT_EQ(s.losses, 0u);
  EXPECT_TRUE(s.held);
}

TEST_F(ReadLease, AnotherWritersAppendWaitsItOutAndEndsIt) {
  auto other = open_store();
  constexpr auto term = 600ms;
  auto lease = make_lease(term, 1500ms);
  struct path {
    const char* name;
    bool conditional;
    bool with_job;
  };
  std::uint64_t losses = 0;
  for (auto p :
       {path{"unconditional", false, false}, path{"conditional", true, false},
        path{"unconditional with a job", false, true},
        path{"conditional with a job", true, true}}) {
    SCOPED_TRACE(p.name);
    ASSERT_TRUE(await_held(*lease));
    auto before = lease->index();
    auto t0 = clock::now();
    auto r = other->append_group(
      {one(std::string{"other:"} + p.name, p.conditional, p.with_job)});
    auto waited = clock::now() - t0;
    ASSERT_TRUE(r[0].ok()) << r[0].message;
    // The point of it all: once another writer's append is acknowledged,
    // the holder does not trust a lease that predates it.
    EXPECT_FALSE(lease->index()) << "the holder still trusts its lease";
    EXPECT_GT(r[0].last_position, *before);
    // The lease was valid for at least half a term when the append took
    // the head lock; it slept until the database's `lease_until`.
    EXPECT_GE(waited, term / 2 - 50ms);
    // The next renewal finds the lease gone, and none is taken again
    // within `quiet` of that commit (the database's clock decides).
    auto deadline = clock::now() + 3s;
    while (lease->stats().losses == losses && clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    EXPECT_EQ(lease->stats().losses, ++losses);
    auto quiet_until = t0 + waited + 1200ms;
    while (clock::now() < quiet_until) {
      ASSERT_FALSE(lease->index()) << "taken again within `quiet`";
      std::this_thread::sleep_for(20ms);
    }
  }
  // Taken again once nobody else has written for `quiet`, at a head that
  // includes every commit.
  ASSERT_TRUE(await_held(*lease));
  EXPECT_EQ(*lease->index(), other->head());
}

TEST_F(ReadLease, OlderBuildsCallingTheOldSignatureWaitItOutToo) {
  auto store = open_store();
  auto lease = make_lease(600ms, 60'000ms);
  ASSERT_TRUE(await_held(*lease));
  // One unconditional request of one event, as migration 2's function took
  // it (26 arguments, no writer).
  auto t0 = clock::now();
  auto result = exec_sql(
    "SELECT (\"" + schema_
    + "\".append_group(42::bigint, '{0}'::smallint[], '{0}'::bigint[], "
      "'{1}'::int[], '{1}'::int[], '{0}'::int[], '{E}'::text[], '{1}'::int[], "
      "'{0}'::int[], '{}'::text[], '{1}'::int[], '{0}'::int[], ''::bytea, "
      "'{1}'::int[], '{0}'::int[], ''::bytea, '{}'::int[], '{}'::int[], "
      "'{}'::int[], '{}'::text[], '{}'::int[], '{}'::int[], '{}'::text[], "
      "'{}'::int[], '{}'::int[], '{}'::int[]))[1]");
  auto waited = clock::now() - t0;
  EXPECT_EQ(result, "1");
  EXPECT_FALSE(lease->index());
  EXPECT_GE(waited, 250ms);
  EXPECT_EQ(store->head(), 1u);
}

TEST_F(ReadLease, AGroupThatAppendsNothingDoesNotWait) {
  auto other = open_store();
  other->append(one("taken", false).events, std::nullopt);
  auto lease = make_lease(1000ms, 0ms);
  ASSERT_TRUE(await_held(*lease));
  // Its condition fails: nothing is written, so nothing waits or ends.
  auto t0 = clock::now();
  auto r = other->append_group({one("taken", true)});
  EXPECT_EQ(r[0].code, errc::append_condition_failed);
  EXPECT_LT(clock::now() - t0, 400ms);
  EXPECT_TRUE(lease->index());
}

TEST_F(ReadLease, GivenBackWhenDestroyed) {
  auto other = open_store();
  {
    auto lease = make_lease(30'000ms, 0ms);
    ASSERT_TRUE(await_held(*lease));
  }
  // Nobody holds it: another writer does not wait the 30 s term.
  auto t0 = clock::now();
  auto r = other->append_group({one("after", false)});
  ASSERT_TRUE(r[0].ok()) << r[0].message;
  EXPECT_LT(clock::now() - t0, 5s);
  EXPECT_EQ(exec_sql("SELECT coalesce(lease_owner::text, 'none') FROM \""
                     + schema_ + "\".head"),
            "none");
}

} // namespace
} // namespace dcbd::test
