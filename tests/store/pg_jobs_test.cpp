// The jobs table on a real PostgreSQL schema: enqueue, fetch order, lease
// fencing, the retry curve, snooze, discard, cancel, manual retry, unique
// keys, scheduled jobs, rescue, pruning, triggers, bad input, and many
// concurrent fetchers that never share a job. Plus the pure helpers
// (RFC 3339, the retry curve, validation).
#include "store/pg_jobs.hpp"

#include "tests/support/pg_fixture.hpp"

#include <gtest/gtest.h>
#include <pqxx/connection>
#include <pqxx/transaction>

#include <mutex>
#include <set>
#include <thread>

namespace dcbd::test {
namespace {

job_request make(std::string kind, std::string queue = "default") {
  job_request j;
  j.kind = std::move(kind);
  j.queue = std::move(queue);
  return j;
}

job_fetch take(std::size_t max, std::string queue = "default") {
  job_fetch f;
  f.queue = std::move(queue);
  f.max = max;
  f.worker = "test";
  return f;
}

job_outcome outcome(const job& j, job_outcome::kind k,
                    std::optional<std::int64_t> delay = std::nullopt) {
  job_outcome o;
  o.id = j.id;
  o.lease = j.lease;
  o.what = k;
  o.error = "boom";
  o.delay_ms = delay;
  return o;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

class PgJobsTest : public PgSchemaTest {
protected:
  void SetUp() override {
    PgSchemaTest::SetUp();
    jobs_ = std::make_unique<pg_jobs>(test_config(schema_));
  }
  void TearDown() override {
    jobs_.reset();
    PgSchemaTest::TearDown();
  }

  std::string count(const std::string& where) {
    return exec_sql("SELECT count(*) FROM " + schema_ + ".jobs WHERE " + where);
  }

  std::unique_ptr<pg_jobs> jobs_;
};

TEST(JobModel, Rfc3339RoundTripsAndRejectsGarbage) {
  auto t = parse_rfc3339("2026-12-01T12:00:00Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, std::int64_t{1796126400} * 1'000'000);
  EXPECT_EQ(format_rfc3339(*t), "2026-12-01T12:00:00.000000Z");
  auto frac = parse_rfc3339("2026-12-01T13:00:00.25+01:00");
  ASSERT_TRUE(frac);
  EXPECT_EQ(*frac, *t + 250'000);
  EXPECT_EQ(parse_rfc3339(format_rfc3339(*frac + 7)), *frac + 7);
  for (auto bad :
       {"", "2026-12-01", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
        "2026-12-01T24:00:00Z", "2026-12-01T12:00:00",
        "2026-12-01T12:00:00Zjunk", "2026-12-01T12:00:00.Z", "yesterday"})
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
  EXPECT_TRUE(parse_rfc3339("2024-02-29T00:00:00Z"));
}

TEST(JobModel, RetryCurveIsAttemptToTheFourthCappedAtADay) {
  EXPECT_EQ(retry_delay_ms(1, 1.0), 1000);
  EXPECT_EQ(retry_delay_ms(2, 1.0), 16'000);
  EXPECT_EQ(retry_delay_ms(3, 0.9), 72'900);
  EXPECT_EQ(retry_delay_ms(20, 1.0), 86'400'000);
  EXPECT_EQ(retry_delay_ms(20, 1.1), 95'040'000);
  EXPECT_EQ(retry_delay_ms(1, 5.0), 1100); // jitter is clamped
}

TEST(JobModel, ValidationNamesTheField) {
  auto bad = [](auto mutate, const char* field) {
    auto j = make("k");
    mutate(j);
    try {
      validate(j, "job");
      ADD_FAILURE() << "accepted a bad " << field;
    } catch (const store_error& e) {
      EXPECT_EQ(e.code(), errc::invalid_argument);
      EXPECT_NE(std::string{e.what()}.find(field), std::string::npos)
        << e.what();
    }
  };
  bad(
    [](job_request& j) {
      j.kind.clear();
    },
    "job.kind");
  bad(
    [](job_request& j) {
      j.queue = "no spaces";
    },
    "job.queue");
  bad(
    [](job_request& j) {
      j.queue.clear();
    },
    "job.queue");
  bad(
    [](job_request& j) {
      j.priority = 0;
    },
    "job.priority");
  bad(
    [](job_request& j) {
      j.priority = 101;
    },
    "job.priority");
  bad(
    [](job_request& j) {
      j.max_attempts = 0;
    },
    "job.max_attempts");
  bad(
    [](job_request& j) {
      j.max_attempts = 100'000;
    },
    "job.max_attempts");
  bad(
    [](job_request& j) {
      j.delay_ms = -1;
    },
    "job.delay_ms");
  bad(
    [](job_request& j) {
      j.delay_ms = std::int64_t{1} << 62;
    },
    "job.delay_ms");
  bad(
    [](job_request& j) {
      j.args = "{not json";
    },
    "job.args");
  bad(
    [](job_request& j) {
      j.args = R"({"a":"\u0000"})";
    },
    "job.args");
  bad(
    [](job_request& j) {
      j.run_at_us = -5;
    },
    "job.run_at");
  bad(
    [](job_request& j) {
      j.unique_key = std::string(300, 'k');
    },
    "job.unique_key");
  auto ok = make("k");
  ok.args = "";
  validate(ok, "job");
  EXPECT_EQ(ok.args, "{}");
}

TEST_F(PgJobsTest, FetchTakesDueJobsInPriorityOrderAndCompletes) {
  auto low = make("k");
  low.priority = 3;
  auto high = make("k");
  high.priority = 1;
  auto later = make("k");
  later.delay_ms = 60'000;
  auto other = make("k", "other");
  auto ids = jobs_->enqueue({low, high, later, other});
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[2].state, job_state::scheduled);
  EXPECT_EQ(ids[0].state, job_state::available);

  auto got = jobs_->fetch(take(10));
  ASSERT_EQ(got.size(), 2u); // not the scheduled one, not the other queue
  EXPECT_EQ(got[0].id, ids[1].id);
  EXPECT_EQ(got[1].id, ids[0].id);
  for (const auto& j : got) {
    EXPECT_EQ(j.state, job_state::running);
    EXPECT_EQ(j.attempt, 1);
    EXPECT_NE(j.lease, 0);
    EXPECT_EQ(j.worker, "test");
  }
  EXPECT_NE(got[0].lease, got[1].lease);
  EXPECT_TRUE(jobs_->fetch(take(10)).empty());

  auto states = jobs_->finish({outcome(got[0], job_outcome::kind::complete),
                               outcome(got[1], job_outcome::kind::complete)});
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0], job_state::completed);
  EXPECT_EQ(states[1], job_state::completed);
  auto j = jobs_->get(got[0].id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, job_state::completed);
  EXPECT_GT(j->finalized_at_us, 0);
  EXPECT_EQ(j->lease, 0);
  // A second completion with the same lease is refused.
  EXPECT_EQ(jobs_->finish({outcome(got[0], job_outcome::kind::complete)})[0],
            std::nullopt);
}

TEST_F(PgJobsTest, DetailedOutcomesNameTheJobsTheyFinished) {
  jobs_->enqueue({make("k", "q1")});
  auto got = jobs_->fetch(take(1, "q1"));
  ASSERT_EQ(got.size(), 1u);
  auto stale = outcome(got[0], job_outcome::kind::complete);
  stale.lease += 1;
  auto lost = jobs_->finish_detailed({stale});
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].state, std::nullopt);
  EXPECT_EQ(lost[0].queue, "");
  auto r
    = jobs_->finish_detailed({outcome(got[0], job_outcome::kind::complete)});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state, job_state::completed);
  EXPECT_EQ(r[0].queue, "q1");
  EXPECT_EQ(r[0].kind, "k");
  EXPECT_EQ(r[0].attempted_at_us, got[0].attempted_at_us);
}

TEST_F(PgJobsTest, KindsFilterTheFetch) {
  jobs_->enqueue({make("a"), make("b"), make("c")});
  auto f = take(10);
  f.kinds = {"b", "c"};
  auto got = jobs_->fetch(f);
  ASSERT_EQ(got.size(), 2u);
  for (const auto& j : got)
    EXPECT_NE(j.kind, "a");
}

TEST_F(PgJobsTest, AnExpiredLeaseIsRescuedAndTheOldLeaseFenced) {
  jobs_->enqueue({make("k")});
  auto f = take(1);
  f.lease_ms = 60'000;
  auto first = jobs_->fetch(f);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_TRUE(jobs_->rescue().empty()); // the lease is alive
  exec_sql("UPDATE " + schema_
           + ".jobs SET lease_expires_at = now() - interval '1 second'");
  auto rescued = jobs_->rescue();
  ASSERT_EQ(rescued.size(), 1u);
  EXPECT_EQ(rescued[0].state, job_state::available);
  auto second = jobs_->fetch(f);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, first[0].id);
  EXPECT_EQ(second[0].attempt, 2);
  EXPECT_NE(second[0].lease, first[0].lease);
  // The stale worker can neither complete, fail nor heartbeat.
  EXPECT_EQ(jobs_->finish({outcome(first[0], job_outcome::kind::complete)})[0],
            std::nullopt);
  EXPECT_EQ(jobs_->finish({outcome(first[0], job_outcome::kind::fail)})[0],
            std::nullopt);
  EXPECT_FALSE(jobs_->heartbeat({first[0].id}, {first[0].lease}, 1000)[0]);
  EXPECT_TRUE(jobs_->heartbeat({second[0].id}, {second[0].lease}, 1000)[0]);
  EXPECT_EQ(jobs_->finish({outcome(second[0], job_outcome::kind::complete)})[0],
            job_state::completed);
  auto j = jobs_->get(first[0].id);
  EXPECT_NE(j->errors.find("lease expired"), std::string::npos) << j->errors;
}

TEST_F(PgJobsTest, RescueDiscardsAJobWithNoAttemptsLeft) {
  auto r = make("k");
  r.max_attempts = 1;
  jobs_->enqueue({r});
  ASSERT_EQ(jobs_->fetch(take(1)).size(), 1u);
  exec_sql("UPDATE " + schema_
           + ".jobs SET lease_expires_at = now() - interval '1 second'");
  auto rescued = jobs_->rescue();
  ASSERT_EQ(rescued.size(), 1u);
  EXPECT_EQ(rescued[0].state, job_state::discarded);
}

TEST_F(PgJobsTest, FailuresFollowTheRetryCurveThenDiscard) {
  auto r = make("k");
  r.max_attempts = 3;
  auto id = jobs_->enqueue({r})[0].id;
  auto got = jobs_->fetch(take(1));
  auto before = now_us();
  EXPECT_EQ(jobs_->finish({outcome(got[0], job_outcome::kind::fail)})[0],
            job_state::retryable);
  auto j = *jobs_->get(id);
  // attempt 1 → 1 s × U(0.9, 1.1)
  EXPECT_GE(j.scheduled_at_us - before, 850'000);
  EXPECT_LE(j.scheduled_at_us - before, 1'150'000 + 200'000);
  EXPECT_NE(j.errors.find("boom"), std::string::npos);
  EXPECT_TRUE(jobs_->fetch(take(1)).empty()); // not due yet

  exec_sql("UPDATE " + schema_ + ".jobs SET scheduled_at = now()");
  got = jobs_->fetch(take(1));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attempt, 2);
  before = now_us();
  jobs_->finish({outcome(got[0], job_outcome::kind::fail)});
  j = *jobs_->get(id);
  // attempt 2 → 16 s × U(0.9, 1.1)
  EXPECT_GE(j.scheduled_at_us - before, 14'000'000);
  EXPECT_LE(j.scheduled_at_us - before, 17'800'000);

  exec_sql("UPDATE " + schema_ + ".jobs SET scheduled_at = now()");
  got = jobs_->fetch(take(1));
  ASSERT_EQ(got.size(), 1u);
  // retry_in_ms is ignored on the last attempt: it is discarded.
  EXPECT_EQ(jobs_->finish({outcome(got[0], job_outcome::kind::fail, 10)})[0],
            job_state::discarded);
  j = *jobs_->get(id);
  EXPECT_EQ(j.attempt, 3);
  EXPECT_GT(j.finalized_at_us, 0);
  EXPECT_EQ(
    count("id = " + std::to_string(id) + " AND jsonb_array_length(errors) = 3"),
    "1");
}

// The curve is capped at a day: attempt 19 would wait 19⁴ s (about 36 h)
// uncapped, and waits 86,400 s × U(0.9, 1.1).
TEST_F(PgJobsTest, TheRetryDelayIsCappedAtADay) {
  auto r = make("k");
  r.max_attempts = 25;
  auto id = jobs_->enqueue({r})[0].id;
  auto got = jobs_->fetch(take(1));
  ASSERT_EQ(got.size(), 1u);
  exec_sql("UPDATE " + schema_
           + ".jobs SET attempt = 19 WHERE id = " + std::to_string(id));
  auto before = now_us();
  EXPECT_EQ(jobs_->finish({outcome(got[0], job_outcome::kind::fail)})[0],
            job_state::retryable);
  auto j = *jobs_->get(id);
  EXPECT_GE(j.scheduled_at_us - before, std::int64_t{77'760} * 1'000'000 - 1);
  EXPECT_LE(j.scheduled_at_us - before, std::int64_t{95'040} * 1'000'000 + 1);
}

TEST_F(PgJobsTest, RetryInMsSnoozeAndDiscardOutcomes) {
  auto ids = jobs_->enqueue({make("k"), make("k"), make("k")});
  auto got = jobs_->fetch(take(3));
  ASSERT_EQ(got.size(), 3u);
  auto before = now_us();
  auto states
    = jobs_->finish({outcome(got[0], job_outcome::kind::fail, 50),
                     outcome(got[1], job_outcome::kind::snooze, 60'000),
                     outcome(got[2], job_outcome::kind::discard)});
  EXPECT_EQ(states[0], job_state::retryable);
  EXPECT_EQ(states[1], job_state::scheduled);
  EXPECT_EQ(states[2], job_state::discarded);
  auto retried = *jobs_->get(got[0].id);
  EXPECT_LE(retried.scheduled_at_us - before, 1'000'000);
  auto snoozed = *jobs_->get(got[1].id);
  EXPECT_EQ(snoozed.attempt, 0); // a snooze spends no attempt
  EXPECT_GE(snoozed.scheduled_at_us - before, 59'000'000);
  EXPECT_EQ(snoozed.errors, "[]");
  std::this_thread::sleep_for(std::chrono::milliseconds{100});
  auto again = jobs_->fetch(take(3));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].id, got[0].id);
  EXPECT_EQ(again[0].attempt, 2);
}

TEST_F(PgJobsTest, AnyErrorTextIsStoredWithoutFailingTheBatch) {
  jobs_->enqueue({make("k"), make("k")});
  auto got = jobs_->fetch(take(2));
  ASSERT_EQ(got.size(), 2u);
  auto long_one = outcome(got[0], job_outcome::kind::fail);
  long_one.error.clear();
  for (int i = 0; i < 3000; ++i)
    long_one.error += "\u00e9"; // 2 bytes each, 6000 bytes in all
  auto raw = outcome(got[1], job_outcome::kind::fail);
  static constexpr char bytes[] = "bad \xff\xfe bytes and a \0 NUL";
  raw.error = std::string{bytes, sizeof bytes - 1};
  auto states = jobs_->finish({long_one, raw});
  EXPECT_EQ(states[0], job_state::retryable);
  EXPECT_EQ(states[1], job_state::retryable);
  EXPECT_NE(jobs_->get(got[1].id)->errors.find("bad ??"), std::string::npos);
}

TEST_F(PgJobsTest, CancelAndManualRetry) {
  auto ids = jobs_->enqueue({make("k"), make("k")});
  auto c = jobs_->cancel(ids[0].id);
  EXPECT_EQ(c.what, job_change::code::ok);
  EXPECT_EQ(c.after.state, job_state::cancelled);
  EXPECT_EQ(jobs_->cancel(ids[0].id).what, job_change::code::conflict);
  EXPECT_EQ(jobs_->cancel(999'999).what, job_change::code::not_found);
  EXPECT_EQ(jobs_->retry(999'999).what, job_change::code::not_found);

  // Cancelling a running job revokes its lease.
  auto got = jobs_->fetch(take(1));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, ids[1].id);
  EXPECT_EQ(jobs_->retry(ids[1].id).what, job_change::code::conflict);
  EXPECT_EQ(jobs_->cancel(ids[1].id).what, job_change::code::ok);
  EXPECT_EQ(jobs_->finish({outcome(got[0], job_outcome::kind::complete)})[0],
            std::nullopt);

  // A retried job is available now, with an attempt to spare.
  auto r = jobs_->retry(ids[1].id);
  EXPECT_EQ(r.what, job_change::code::ok);
  EXPECT_EQ(r.after.state, job_state::available);
  EXPECT_EQ(r.after.finalized_at_us, 0);
  auto again = jobs_->fetch(take(2));
  ASSERT_EQ(again.size(), 1u); // the cancelled one stays cancelled
  EXPECT_EQ(again[0].id, ids[1].id);
}

TEST_F(PgJobsTest, ManualRetryOfAnExhaustedJobAddsAnAttempt) {
  auto r = make("k");
  r.max_attempts = 1;
  auto id = jobs_->enqueue({r})[0].id;
  auto got = jobs_->fetch(take(1));
  EXPECT_EQ(jobs_->finish({outcome(got[0], job_outcome::kind::fail)})[0],
            job_state::discarded);
  auto back = jobs_->retry(id);
  ASSERT_EQ(back.what, job_change::code::ok);
  EXPECT_EQ(back.after.max_attempts, 2);
  got = jobs_->fetch(take(1));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attempt, 2);
}

TEST_F(PgJobsTest, UniqueKeysHoldAmongLiveJobs) {
  auto a = make("k");
  a.unique_key = "u1";
  auto first = jobs_->enqueue({a, a});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_FALSE(first[0].duplicate);
  EXPECT_TRUE(first[1].duplicate);
  EXPECT_EQ(first[1].id, first[0].id);
  auto dup = jobs_->enqueue({a});
  EXPECT_TRUE(dup[0].duplicate);
  EXPECT_EQ(dup[0].id, first[0].id);
  EXPECT_EQ(count("unique_key = 'u1'"), "1");
  // Once finished, the key is free again; retrying the old one now
  // conflicts with the new holder.
  auto got = jobs_->fetch(take(1));
  jobs_->finish({outcome(got[0], job_outcome::kind::complete)});
  auto fresh = jobs_->enqueue({a});
  EXPECT_FALSE(fresh[0].duplicate);
  EXPECT_NE(fresh[0].id, first[0].id);
  EXPECT_EQ(jobs_->retry(first[0].id).what, job_change::code::conflict);
}

TEST_F(PgJobsTest, RunAtInThePastIsAvailableInTheFutureScheduled) {
  auto past = make("k");
  past.run_at_us = now_us() - 10'000'000;
  auto future = make("k");
  future.run_at_us = now_us() + 3'600'000'000;
  auto ids = jobs_->enqueue({past, future});
  EXPECT_EQ(ids[0].state, job_state::available);
  EXPECT_EQ(ids[1].state, job_state::scheduled);
  auto f = jobs_->get(ids[1].id);
  EXPECT_NEAR(static_cast<double>(f->scheduled_at_us),
              static_cast<double>(*future.run_at_us), 1.0);
  EXPECT_EQ(jobs_->fetch(take(5)).size(), 1u);
  exec_sql("UPDATE " + schema_ + ".jobs SET scheduled_at = now() WHERE id = "
           + std::to_string(ids[1].id));
  EXPECT_EQ(jobs_->promote_due(), 1u);
  EXPECT_EQ(jobs_->get(ids[1].id)->state, job_state::available);
}

// run_at and delay_ms together are two lower bounds: the later wins (the
// jobs of an append follow the same rule, append_jobs_test).
TEST_F(PgJobsTest, RunAtAndDelayTogetherScheduleAtTheLaterOfTheTwo) {
  auto run_at_later = make("k");
  run_at_later.run_at_us = now_us() + 3'600'000'000;
  run_at_later.delay_ms = 60'000;
  auto delay_later = make("k");
  delay_later.run_at_us = now_us() - 10'000'000;
  delay_later.delay_ms = 3'600'000;
  auto ids = jobs_->enqueue({run_at_later, delay_later});
  EXPECT_EQ(ids[0].state, job_state::scheduled);
  EXPECT_EQ(ids[1].state, job_state::scheduled);
  EXPECT_EQ(jobs_->get(ids[0].id)->scheduled_at_us, *run_at_later.run_at_us);
  auto d = jobs_->get(ids[1].id);
  // created_at is the insert's now(), as is the delay's start.
  EXPECT_EQ(d->scheduled_at_us - d->created_at_us, 3'600'000'000);
  EXPECT_TRUE(jobs_->fetch(take(5)).empty());
}

TEST_F(PgJobsTest, BadInputChangesNothing) {
  auto good = make("k");
  auto bad = make("k");
  bad.priority = -3;
  EXPECT_THROW(jobs_->enqueue({good, bad}), store_error);
  EXPECT_EQ(count("true"), "0");
  std::vector<job_request> many(job_limits{}.max_jobs_per_request + 1, good);
  EXPECT_THROW(jobs_->enqueue(many), store_error);
  EXPECT_EQ(count("true"), "0");
  job_trigger t;
  t.name = "bad name!";
  t.kind = "k";
  EXPECT_THROW(jobs_->create_trigger(t, 0), store_error);
  EXPECT_TRUE(jobs_->triggers().empty());
}

TEST_F(PgJobsTest, CountsListAndPrune) {
  jobs_->enqueue({make("a"), make("a"), make("b", "q2")});
  auto got = jobs_->fetch(take(1));
  jobs_->finish({outcome(got[0], job_outcome::kind::complete)});
  auto counts = jobs_->counts();
  ASSERT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts[0].queue, "default");
  EXPECT_EQ(counts[0].by_state[static_cast<int>(job_state::available)], 1u);
  EXPECT_EQ(counts[0].by_state[static_cast<int>(job_state::completed)], 1u);
  EXPECT_EQ(counts[1].queue, "q2");

  job_filter f;
  f.queue = "default";
  EXPECT_EQ(jobs_->list(f).size(), 2u);
  f.state = job_state::completed;
  auto done = jobs_->list(f);
  ASSERT_EQ(done.size(), 1u);
  f = {};
  f.limit = 1;
  auto newest = jobs_->list(f);
  ASSERT_EQ(newest.size(), 1u);
  f.before_id = newest[0].id;
  f.limit = 10;
  EXPECT_EQ(jobs_->list(f).size(), 2u);

  job_retention keep;
  EXPECT_EQ(jobs_->prune(keep), 0u);
  exec_sql("UPDATE " + schema_
           + ".jobs SET finalized_at = now() - interval '2 days' WHERE state "
             "= 'completed'");
  EXPECT_EQ(jobs_->prune(keep), 1u);
  EXPECT_EQ(count("true"), "2");
}

TEST_F(PgJobsTest, ConcurrentFetchersNeverShareAJob) {
  constexpr int total = 2000;
  std::vector<job_request> batch(total, make("k"));
  jobs_->enqueue(batch);
  std::mutex mtx;
  std::multiset<std::int64_t> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      pg_jobs mine{test_config(schema_), 1};
      for (;;) {
        auto got = mine.fetch(take(37));
        if (got.empty())
          return;
        std::vector<job_outcome> outs;
        for (const auto& j : got) {
          std::lock_guard guard{mtx};
          seen.insert(j.id);
          outs.push_back(outcome(j, job_outcome::kind::complete));
        }
        for (auto s : mine.finish(outs))
          EXPECT_EQ(s, job_state::completed);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(total));
  std::set<std::int64_t> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size());
  EXPECT_EQ(count("state = 'completed'"), std::to_string(total));
}

TEST_F(PgJobsTest, TriggersMakeOneJobPerEventEver) {
  job_trigger t;
  t.name = "confirm";
  t.query = query{{query_item{{"StudentSubscribed"}, {}}}};
  t.kind = "send";
  EXPECT_TRUE(jobs_->create_trigger(t, 0));
  EXPECT_FALSE(jobs_->create_trigger(t, 0));
  auto listed = jobs_->triggers();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].query, t.query);
  EXPECT_EQ(listed[0].position, 0u);

  std::vector<sequenced_event> evs;
  for (std::uint64_t p : {3, 5, 9}) {
    sequenced_event e;
    e.position = p;
    e.event
      = event{"StudentSubscribed", {"course:c1"}, "d" + std::to_string(p), {}};
    evs.push_back(e);
  }
  auto fired = jobs_->fire("confirm", evs, 9);
  ASSERT_TRUE(fired);
  EXPECT_EQ(fired->checkpoint, 9u);
  EXPECT_EQ(fired->jobs, 3u);
  // A replay (after a crash) inserts nothing twice, and neither does a
  // replay below the checkpoint.
  fired = jobs_->fire("confirm", evs, 9);
  ASSERT_TRUE(fired);
  EXPECT_EQ(fired->checkpoint, 9u);
  EXPECT_EQ(fired->jobs, 0u);
  exec_sql("UPDATE " + schema_ + ".job_triggers SET position = 4");
  fired = jobs_->fire("confirm", evs, 12);
  ASSERT_TRUE(fired);
  EXPECT_EQ(fired->checkpoint, 12u);
  EXPECT_EQ(fired->jobs, 0u) << "5 and 9 have their jobs already";
  EXPECT_EQ(count("trigger_name = 'confirm'"), "3");
  auto j = jobs_->list({});
  EXPECT_NE(j[0].args.find("\"trigger\": \"confirm\""), std::string::npos)
    << j[0].args;
  EXPECT_NE(j[0].args.find("\"position\": 9"), std::string::npos);
  EXPECT_EQ(j[0].trigger, "confirm");
  // "now": after the head at creation.
  job_trigger later = t;
  later.name = "later";
  EXPECT_TRUE(jobs_->create_trigger(later, std::nullopt));
  EXPECT_TRUE(jobs_->delete_trigger("later"));
  EXPECT_FALSE(jobs_->delete_trigger("later"));
  EXPECT_EQ(jobs_->fire("later", evs, 9), std::nullopt);
}

TEST_F(PgJobsTest, EnqueueInsideACallersTransaction) {
  pqxx::connection conn{test_dsn()};
  {
    pqxx::work tx{conn};
    jobs_->enqueue(tx, {make("k")});
    // rolled back
  }
  EXPECT_EQ(count("true"), "0");
  pqxx::work tx{conn};
  jobs_->enqueue(tx, {make("k")});
  tx.commit();
  EXPECT_EQ(count("true"), "1");
}

} // namespace
} // namespace dcbd::test
