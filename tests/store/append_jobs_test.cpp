// Jobs enqueued with appends (API.md §7): a request's jobs are inserted in
// the statement that appends its events, so they exist iff the request is
// accepted. Checked against the jobs table itself.
#include "store/error.hpp"
#include "store/pg_jobs.hpp"
#include "tests/support/pg_fixture.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace dcbd::test {
namespace {

// A row of the jobs table, as the tests compare it.
struct job_row {
  std::string queue;
  std::string kind;
  std::string args;
  int priority = 0;
  int max_attempts = 0;
  std::string state;
  std::string unique_key;
  // scheduled_at - now(), in seconds.
  double due_in_s = 0;
  std::int64_t scheduled_at_us = 0;
};

job_request job(std::string kind, std::string unique_key = {}) {
  job_request j;
  j.kind = std::move(kind);
  j.unique_key = std::move(unique_key);
  return j;
}

append_request conditional(std::vector<event> events, query q,
                           std::uint64_t after, std::vector<job_request> jobs) {
  return append_request{std::move(events),
                        append_condition{std::move(q), after}, std::move(jobs)};
}

append_request unconditional(std::vector<event> events,
                             std::vector<job_request> jobs) {
  return append_request{std::move(events), std::nullopt, std::move(jobs)};
}

// Now, in microseconds since the Unix epoch (a job's run_at_us).
std::int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch())
    .count();
}

query tag(std::string t) {
  return query{{query_item{{}, {std::move(t)}}}};
}

class AppendJobs : public PgSchemaTest {
protected:
  void SetUp() override {
    PgSchemaTest::SetUp();
    store_ = open_store();
  }

  std::vector<job_row> jobs() {
    pqxx::connection conn{test_dsn()};
    pqxx::nontransaction tx{conn};
    auto r = tx.exec(
      "SELECT queue, kind, args::text, priority, max_attempts, state, "
      "coalesce(unique_key, ''), "
      "extract(epoch FROM scheduled_at - now())::float8, "
      "(extract(epoch FROM scheduled_at) * 1000000)::bigint FROM "
      + tx.quote_name(schema_) + ".jobs ORDER BY id");
    std::vector<job_row> out;
    for (const auto& row : r)
      out.push_back(job_row{row[0].as<std::string>(), row[1].as<std::string>(),
                            row[2].as<std::string>(), row[3].as<int>(),
                            row[4].as<int>(), row[5].as<std::string>(),
                            row[6].as<std::string>(), row[7].as<double>(),
                            row[8].as<std::int64_t>()});
    return out;
  }

  std::vector<std::string> kinds() {
    std::vector<std::string> out;
    for (auto& j : jobs())
      out.push_back(j.kind);
    return out;
  }

  std::string count_events() {
    return exec_sql("SELECT count(*) FROM " + schema_ + ".events");
  }

  std::unique_ptr<pg_event_store> store_;
};

TEST_F(AppendJobs, AcceptedConditionalAppendCreatesItsJobs) {
  job_request full;
  full.queue = "mail";
  full.kind = "send_welcome";
  full.args = R"({"to": "a@example.com", "n": [1, 2]})";
  full.priority = 3;
  full.max_attempts = 5;
  full.unique_key = "welcome:a";
  auto res = store_->append_group(
    {conditional({event{"Registered", {"user:a"}}}, tag("user:a"), 0,
                 {full, job("audit")})});
  ASSERT_TRUE(res.at(0).ok()) << res[0].message;
  EXPECT_EQ(res[0].last_position, 1u);
  auto rows = jobs();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].queue, "mail");
  EXPECT_EQ(rows[0].kind, "send_welcome");
  EXPECT_EQ(rows[0].args, R"({"n": [1, 2], "to": "a@example.com"})");
  EXPECT_EQ(rows[0].priority, 3);
  EXPECT_EQ(rows[0].max_attempts, 5);
  EXPECT_EQ(rows[0].state, "available");
  EXPECT_EQ(rows[0].unique_key, "welcome:a");
  EXPECT_LE(rows[0].due_in_s, 0.0);
  EXPECT_EQ(rows[1].queue, "default");
  EXPECT_EQ(rows[1].kind, "audit");
  EXPECT_EQ(rows[1].args, "{}");
  EXPECT_EQ(rows[1].priority, 1);
  EXPECT_EQ(rows[1].max_attempts, 20);
  EXPECT_EQ(rows[1].unique_key, "");
}

TEST_F(AppendJobs, FailedConditionCreatesNoJobsAndNoEvents) {
  store_->append({event{"Registered", {"user:a"}}});
  auto res = store_->append_group(
    {conditional({event{"Registered", {"user:a"}}}, tag("user:a"), 0,
                 {job("send_welcome")})});
  EXPECT_EQ(res.at(0).code, errc::append_condition_failed);
  EXPECT_EQ(count_events(), "1");
  EXPECT_TRUE(jobs().empty());
  // And through `append`, which throws.
  EXPECT_THROW(store_->append({event{"X", {"user:a"}}},
                              append_condition{tag("user:a"), 0}),
               store_error);
  EXPECT_TRUE(jobs().empty());
}

TEST_F(AppendJobs, GroupCreatesExactlyTheAcceptedRequestsJobs) {
  store_->append({event{"T", {"taken"}}});
  std::vector<validated_append> group;
  auto add = [&group](append_request r) {
    group.push_back(validate_append(std::move(r), limits{}));
  };
  // Accepted.
  add(conditional({event{"T", {"a"}}}, tag("a"), 0, {job("a1"), job("a2")}));
  // Fails against the database.
  add(conditional({event{"T", {"b"}}}, tag("taken"), 0, {job("b1")}));
  // Fails in the group: request 0 appended a matching event.
  add(conditional({event{"T", {"c"}}}, tag("a"), 1, {job("c1")}));
  // Accepted, unconditional, no jobs.
  add(unconditional({event{"T", {"d"}}}, {}));
  // Accepted, unconditional, with jobs.
  add(unconditional({event{"T", {"e"}}}, {job("e1")}));
  // Accepted: matches all, after the head the group will have reached.
  add(append_request{
    {event{"T", {"f"}}}, append_condition{query::all(), 4}, {job("f1")}});
  // Fails: matches all, an earlier request of the group appended.
  add(append_request{
    {event{"T", {"g"}}}, append_condition{query::all(), 1}, {job("g1")}});
  auto res = store_->append_validated(group);
  ASSERT_EQ(res.size(), 7u);
  EXPECT_TRUE(res[0].ok()) << res[0].message;
  EXPECT_EQ(res[1].code, errc::append_condition_failed);
  EXPECT_EQ(res[2].code, errc::append_condition_failed);
  EXPECT_TRUE(res[3].ok()) << res[3].message;
  EXPECT_TRUE(res[4].ok()) << res[4].message;
  EXPECT_TRUE(res[5].ok()) << res[5].message;
  EXPECT_EQ(res[6].code, errc::append_condition_failed);
  EXPECT_EQ(kinds(), (std::vector<std::string>{"a1", "a2", "e1", "f1"}));
  EXPECT_EQ(store_->head(), 5u);
}

TEST_F(AppendJobs, UnconditionalGroupCreatesAllItsJobs) {
  auto res = store_->append_group(
    {unconditional({event{"T", {"a"}}}, {job("a1")}),
     unconditional({event{"T", {"b"}}, event{"T", {"b"}}},
                   {job("b1"), job("b2")}),
     unconditional({event{"T", {"c"}}}, {})});
  for (auto& r : res)
    ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(res[2].last_position, 4u);
  EXPECT_EQ(kinds(), (std::vector<std::string>{"a1", "b1", "b2"}));
  EXPECT_EQ(count_events(), "4");
}

TEST_F(AppendJobs, GroupWithoutJobsInsertsNone) {
  store_->append_group({unconditional({event{"T", {"a"}}}, {}),
                        conditional({event{"T", {"b"}}}, tag("b"), 0, {})});
  EXPECT_EQ(count_events(), "2");
  EXPECT_TRUE(jobs().empty());
}

TEST_F(AppendJobs, FutureJobsAreScheduledAndDueOnesAvailable) {
  auto now = now_us();
  auto delayed = job("delayed");
  delayed.delay_ms = 60'000;
  auto at = job("at");
  at.run_at_us = now + 3'600'000'123; // an hour on, to the microsecond
  auto past = job("past");
  past.run_at_us = now - 1'000'000;
  auto res = store_->append_group(
    {unconditional({event{"T", {"a"}}}, {delayed, at}),
     conditional({event{"T", {"b"}}}, tag("b"), 0, {past, job("now")})});
  for (auto& r : res)
    ASSERT_TRUE(r.ok()) << r.message;
  auto rows = jobs();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].state, "scheduled");
  EXPECT_NEAR(rows[0].due_in_s, 60.0, 5.0);
  EXPECT_EQ(rows[1].state, "scheduled");
  EXPECT_EQ(rows[1].scheduled_at_us, *at.run_at_us);
  EXPECT_EQ(rows[2].state, "available");
  EXPECT_EQ(rows[2].scheduled_at_us, *past.run_at_us);
  EXPECT_EQ(rows[3].state, "available");
}

// run_at and delay_ms together are two lower bounds: the later wins, as
// for jobs enqueued alone (pg_jobs_test, one SQL rule for both).
TEST_F(AppendJobs, RunAtAndDelayTogetherScheduleAtTheLaterOfTheTwo) {
  auto now = now_us();
  auto run_at_later = job("run_at_later");
  run_at_later.run_at_us = now + 3'600'000'123;
  run_at_later.delay_ms = 60'000;
  auto delay_later = job("delay_later");
  delay_later.run_at_us = now - 1'000'000;
  delay_later.delay_ms = 60'000;
  auto res = store_->append_group(
    {unconditional({event{"T", {"a"}}}, {run_at_later}),
     conditional({event{"T", {"b"}}}, tag("b"), 0, {delay_later})});
  for (auto& r : res)
    ASSERT_TRUE(r.ok()) << r.message;
  auto rows = jobs();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].state, "scheduled");
  EXPECT_EQ(rows[0].scheduled_at_us, *run_at_later.run_at_us);
  EXPECT_EQ(rows[1].state, "scheduled");
  EXPECT_NEAR(rows[1].due_in_s, 60.0, 5.0);
}

TEST_F(AppendJobs, DuplicateUniqueKeyKeepsOneLiveJobAndTheAppend) {
  auto first = store_->append_group(
    {unconditional({event{"T", {"a"}}}, {job("first", "k")})});
  ASSERT_TRUE(first.at(0).ok());
  // A live job holds the key: the append goes through, its job does not.
  auto second = store_->append_group(
    {conditional({event{"T", {"b"}}}, tag("b"), 0, {job("second", "k")})});
  ASSERT_TRUE(second.at(0).ok()) << second[0].message;
  // The same key twice in one group, and twice in one request: the first
  // wins.
  auto third = store_->append_group(
    {unconditional({event{"T", {"c"}}}, {job("c1", "m"), job("c2", "m")}),
     unconditional({event{"T", {"d"}}}, {job("d1", "m"), job("d2", "n")})});
  for (auto& r : third)
    ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(count_events(), "4");
  EXPECT_EQ(kinds(), (std::vector<std::string>{"first", "c1", "d2"}));
  // Once the job is final, the key is free again.
  exec_sql("UPDATE " + schema_
           + ".jobs SET state = 'completed', finalized_at = now() WHERE "
             "kind = 'first'");
  auto fourth = store_->append_group(
    {conditional({event{"T", {"e"}}}, tag("e"), 0, {job("fourth", "k")})});
  ASSERT_TRUE(fourth.at(0).ok()) << fourth[0].message;
  EXPECT_EQ(kinds(), (std::vector<std::string>{"first", "c1", "d2", "fourth"}));
}

TEST_F(AppendJobs, BadJobFieldsAreInvalidAndWriteNothing) {
  auto no_kind = job("");
  auto bad_queue = job("k");
  bad_queue.queue = "no spaces";
  auto bad_priority = job("k");
  bad_priority.priority = 0;
  auto bad_attempts = job("k");
  bad_attempts.max_attempts = 0;
  auto bad_delay = job("k");
  bad_delay.delay_ms = -1;
  struct bad_case {
    job_request j;
    std::string field;
  };
  std::vector<bad_case> cases{{no_kind, "jobs[1].kind"},
                              {bad_queue, "jobs[1].queue"},
                              {bad_priority, "jobs[1].priority"},
                              {bad_attempts, "jobs[1].max_attempts"},
                              {bad_delay, "jobs[1].delay_ms"}};
  for (auto& c : cases) {
    auto res = store_->append_group(
      {conditional({event{"T", {"a"}}}, tag("a"), 0, {job("ok"), c.j})});
    EXPECT_EQ(res.at(0).code, errc::invalid_argument) << c.field;
    EXPECT_NE(res[0].message.find(c.field), std::string::npos)
      << res[0].message;
  }
  // Too many jobs.
  std::vector<job_request> many(job_limits{}.max_jobs_per_request + 1,
                                job("k"));
  auto res = store_->append_group(
    {unconditional({event{"T", {"a"}}}, std::move(many))});
  EXPECT_EQ(res.at(0).code, errc::invalid_argument);
  EXPECT_NE(res[0].message.find("jobs"), std::string::npos) << res[0].message;
  // Jobs without events are as invalid as an append without events.
  res = store_->append_group({unconditional({}, {job("k")})});
  EXPECT_EQ(res.at(0).code, errc::invalid_argument);
  EXPECT_NE(res[0].message.find("events"), std::string::npos) << res[0].message;
  EXPECT_EQ(count_events(), "0");
  EXPECT_TRUE(jobs().empty());
}

TEST_F(AppendJobs, InsertedJobsNotifyTheirQueues) {
  struct receiver final : pqxx::notification_receiver {
    receiver(pqxx::connection_base& c, const std::string& channel)
      : pqxx::notification_receiver(c, channel) {
      // nop
    }
    void operator()(const std::string& payload, int) override {
      payloads.push_back(payload);
    }
    std::vector<std::string> payloads;
  };
  pqxx::connection conn{test_dsn()};
  receiver r{conn, job_channel(schema_)};
  auto mail = job("m1");
  mail.queue = "mail";
  auto mail2 = job("m2");
  mail2.queue = "mail";
  // No job inserted (a failed condition): no notification. Notifications
  // arrive in commit order, so one for it would come first.
  store_->append({event{"T", {"x"}}});
  auto other = job("o1");
  other.queue = "other";
  store_->append_group(
    {conditional({event{"T", {"c"}}}, tag("x"), 0, {other})});
  store_->append_group(
    {unconditional({event{"T", {"a"}}}, {mail, job("d1")}),
     conditional({event{"T", {"b"}}}, tag("b"), 0, {mail2})});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
  while (r.payloads.size() < 2 && std::chrono::steady_clock::now() < deadline)
    conn.await_notification(0, 100'000);
  conn.get_notifs();
  std::sort(r.payloads.begin(), r.payloads.end());
  EXPECT_EQ(r.payloads, (std::vector<std::string>{"default", "mail"}));
}

TEST(MemoryStoreJobs, AppendWithJobsFailsAndWritesNothing) {
  memory_event_store store;
  auto res = store.append_group({unconditional({event{"T", {"a"}}}, {job("k")}),
                                 unconditional({event{"T", {"b"}}}, {})});
  EXPECT_EQ(res.at(0).code, errc::invalid_argument);
  EXPECT_EQ(res[0].message, "jobs need the PostgreSQL store");
  EXPECT_TRUE(res.at(1).ok());
  EXPECT_EQ(store.head(), 1u);
  EXPECT_EQ(store.read(tag("a")).events.size(), 0u);
}

} // namespace
} // namespace dcbd::test
