// The job service on a real PostgreSQL schema: in-process workers run each
// job once, failures retry and discard, a transactional worker's effect and
// completion commit together, a vanished worker's job is rescued and its
// old lease fenced, long-polling fetches wake on enqueue, two services on
// one database never run a job twice at once, triggers make exactly one job
// per matching event across a crash, and stop hands back unstarted jobs.
#include "actors/jobs.hpp"

#include "tests/support/engine_fixture.hpp"

#include <gtest/gtest.h>
#include <pqxx/connection>
#include <pqxx/transaction>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace dcbd::test {
namespace {

using namespace std::chrono_literals;

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds d = 20s) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    if (pred())
      return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

job_request make(std::string kind, std::string args = "{}") {
  job_request j;
  j.kind = std::move(kind);
  j.args = std::move(args);
  return j;
}

class JobsTest : public EngineTest {
protected:
  void TearDown() override {
    services_.clear();
    EngineTest::TearDown();
  }

  job_service& service(std::string node = "n1", engine* eng = nullptr,
                       bool triggers = true) {
    jobs_config cfg;
    cfg.node = std::move(node);
    cfg.poll = 200ms;
    cfg.lease = 2000ms;
    cfg.heartbeat = 300ms;
    cfg.maintenance = 200ms;
    cfg.triggers = triggers;
    cfg.shutdown_grace = 3s;
    cfg.retention = retention_;
    services_.push_back(
      std::make_unique<job_service>(*sys_, eng ? *eng : *engine_, cfg));
    return *services_.back();
  }

  std::string count(const std::string& where) {
    return exec_sql("SELECT count(*) FROM " + schema_ + ".jobs WHERE " + where);
  }

  std::vector<std::unique_ptr<job_service>> services_;
  job_retention retention_;
};

TEST_F(JobsTest, InProcessWorkersRunEveryJobOnce) {
  start();
  auto& svc = service();
  std::mutex mtx;
  std::map<std::int64_t, int> runs;
  std::atomic<int> now{0}, peak{0};
  job_worker_spec w;
  w.kind = "noop";
  w.concurrency = 4;
  w.handle = [&](const job& j) {
    auto n = ++now;
    for (int p = peak.load(); n > p && !peak.compare_exchange_weak(p, n);)
      ;
    std::this_thread::sleep_for(1ms);
    {
      std::lock_guard guard{mtx};
      ++runs[j.id];
    }
    --now;
    return job_result::ok();
  };
  svc.add_worker(w);
  std::vector<job_request> batch(300, make("noop"));
  auto ids = svc.enqueue_blocking(batch);
  ASSERT_EQ(ids.size(), 300u);
  ASSERT_TRUE(eventually([&] {
    return count("state = 'completed'") == "300";
  }))
    << count("state = 'completed'");
  std::lock_guard guard{mtx};
  EXPECT_EQ(runs.size(), 300u);
  for (auto& [id, n] : runs)
    EXPECT_EQ(n, 1) << "job " << id;
  EXPECT_LE(peak.load(), 4);
  EXPECT_GE(svc.stats().completed, 300u);
  EXPECT_GE(svc.stats().flushes, 1u);
}

TEST_F(JobsTest, FailuresRetrySnoozeAndDiscard) {
  start();
  auto& svc = service();
  std::atomic<int> flaky_runs{0};
  job_worker_spec flaky;
  flaky.kind = "flaky";
  flaky.handle = [&](const job&) -> job_result {
    if (++flaky_runs < 3)
      throw std::runtime_error("not yet");
    return job_result::ok();
  };
  svc.add_worker(flaky);
  job_worker_spec hopeless;
  hopeless.kind = "hopeless";
  hopeless.handle = [](const job&) {
    return job_result::discard("bad args");
  };
  svc.add_worker(hopeless);
  job_worker_spec sleepy;
  sleepy.kind = "sleepy";
  sleepy.handle = [](const job&) {
    return job_result::snooze(1h);
  };
  svc.add_worker(sleepy);
  auto ids
    = svc.enqueue_blocking({make("flaky"), make("hopeless"), make("sleepy")});
  // The first failure waits about a second, the second about 16 s; skip
  // the wait by making it due.
  ASSERT_TRUE(eventually([&] {
    return flaky_runs.load() >= 1
           && count("kind = 'flaky' AND state = 'retryable'") == "1";
  }));
  auto j = svc.store().get(ids[0].id);
  EXPECT_NE(j->errors.find("not yet"), std::string::npos);
  exec_sql("UPDATE " + schema_
           + ".jobs SET scheduled_at = now() WHERE kind "
             "= 'flaky' AND state = 'retryable'");
  ASSERT_TRUE(eventually([&] {
    return flaky_runs.load() >= 2
           && count("kind = 'flaky' AND state = 'retryable'") == "1";
  }));
  exec_sql("UPDATE " + schema_
           + ".jobs SET scheduled_at = now() WHERE kind "
             "= 'flaky' AND state = 'retryable'");
  ASSERT_TRUE(eventually([&] {
    return count("kind = 'flaky' AND state = 'completed'") == "1";
  }));
  EXPECT_EQ(flaky_runs.load(), 3);
  EXPECT_EQ(svc.store().get(ids[0].id)->attempt, 3);
  EXPECT_TRUE(eventually([&] {
    return count("kind = 'hopeless' AND state = 'discarded'") == "1"
           && count("kind = 'sleepy' AND state = 'scheduled' AND attempt = 0")
                == "1";
  }));
}

TEST_F(JobsTest, ATransactionalWorkersEffectCommitsWithItsCompletion) {
  start();
  exec_sql("CREATE TABLE " + schema_ + ".sent (job bigint PRIMARY KEY)");
  auto& svc = service();
  std::atomic<int> calls{0};
  job_worker_spec w;
  w.kind = "send";
  w.concurrency = 3;
  auto s = schema_;
  w.handle_tx = [&calls, s](pqxx::work& tx, const job& j) {
    tx.exec_params("INSERT INTO " + s + ".sent (job) VALUES ($1)", j.id);
    // Every fifth first attempt fails after writing: its row rolls back.
    if (j.attempt == 1 && j.id % 5 == 0) {
      ++calls;
      return job_result::retry("flaky", 10ms);
    }
    ++calls;
    return job_result::ok();
  };
  svc.add_worker(w);
  std::vector<job_request> batch(50, make("send"));
  svc.enqueue_blocking(batch);
  ASSERT_TRUE(eventually([&] {
    return count("state = 'completed'") == "50";
  }))
    << count("true AND state <> 'completed'");
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_ + ".sent"), "50");
  EXPECT_GT(calls.load(), 50);
}

TEST_F(JobsTest, AVanishedWorkersJobIsRescuedAndItsLeaseFenced) {
  start();
  auto& svc = service();
  auto id = svc.enqueue_blocking({make("work")})[0].id;
  // An external worker takes it with a short lease and vanishes.
  job_fetch f;
  f.max = 1;
  f.lease_ms = 500;
  f.worker = "ghost";
  auto ghost = svc.store().fetch(f);
  ASSERT_EQ(ghost.size(), 1u);
  std::atomic<int> runs{0};
  job_worker_spec w;
  w.kind = "work";
  w.handle = [&](const job& j) {
    EXPECT_EQ(j.attempt, 2);
    ++runs;
    return job_result::ok();
  };
  auto t0 = std::chrono::steady_clock::now();
  svc.add_worker(w);
  ASSERT_TRUE(eventually([&] {
    return svc.store().get(id)->state == job_state::completed;
  }));
  // Fetchable again within lease + 1 s (API.md §7).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms + 1s);
  EXPECT_EQ(runs.load(), 1);
  job_outcome late;
  late.id = id;
  late.lease = ghost[0].lease;
  EXPECT_EQ(svc.store().finish({late})[0], std::nullopt);
  EXPECT_GE(svc.stats().rescued, 1u);
}

// Maintenance deletes final jobs past their retention in whole batches
// while there are more (not one batch now and then, which a busy queue
// outgrows), the oldest first, and keeps what is still within retention.
TEST_F(JobsTest, MaintenancePrunesABacklogInBatchesAndKeepsTheRest) {
  start();
  retention_.batch = 100;
  auto& svc = service();
  std::vector<job_request> batch(1200, make("old"));
  ASSERT_EQ(svc.enqueue_blocking(batch).size(), 1200u);
  auto jobs = schema_ + ".jobs";
  exec_sql("UPDATE " + jobs
           + " SET state = 'completed', finalized_at = now() - interval '2 "
             "days' WHERE id IN (SELECT id FROM "
           + jobs + " ORDER BY id LIMIT 1000)");
  exec_sql("UPDATE " + jobs
           + " SET state = 'completed', finalized_at = now() WHERE id IN "
             "(SELECT id FROM "
           + jobs + " WHERE state = 'available' ORDER BY id LIMIT 100)");
  exec_sql("UPDATE " + jobs
           + " SET state = 'discarded', finalized_at = now() - interval '2 "
             "days' WHERE state = 'available'");
  // Two maintenance runs (every 200 ms here) are enough for ten batches.
  EXPECT_TRUE(eventually(
    [&] {
      return count("true") == "200";
    },
    3s))
    << count("true") << " jobs left";
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(count("state = 'completed'"), "100") << "within retention";
  EXPECT_EQ(count("state = 'discarded'"), "100") << "kept for 7 days";
  EXPECT_EQ(svc.stats().pruned, 1000u);
}

// A job that runs longer than its lease keeps it: the dispatcher's
// heartbeats extend the lease, so no maintenance rescues it (here or on
// another node) and it runs once, on its first attempt.
TEST_F(JobsTest, HeartbeatsKeepTheLeaseOfAJobThatRunsLongerThanIt) {
  start();
  auto& svc = service();
  auto& other = service("n2");
  std::atomic<int> runs{0};
  job_worker_spec w;
  w.kind = "long";
  w.handle = [&](const job& j) {
    ++runs;
    EXPECT_EQ(j.attempt, 1);
    std::this_thread::sleep_for(5s); // two and a half leases
    return job_result::ok();
  };
  svc.add_worker(w);
  auto id = svc.enqueue_blocking({make("long")})[0].id;
  ASSERT_TRUE(eventually(
    [&] {
      return svc.store().get(id)->state == job_state::completed;
    },
    20s));
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(svc.store().get(id)->attempt, 1);
  EXPECT_EQ(svc.stats().rescued + other.stats().rescued, 0u);
  EXPECT_EQ(svc.stats().lease_lost, 0u);
}

TEST_F(JobsTest, LongPollingFetchWakesOnEnqueueAndTimesOut) {
  start();
  auto& svc = service();
  job_fetch f;
  f.queue = "mail";
  f.max = 5;
  f.worker = "ext";
  std::promise<caf::expected<std::vector<job>>> empty;
  auto t0 = std::chrono::steady_clock::now();
  svc.fetch(f, 300ms, [&](caf::expected<std::vector<job>> r) {
    empty.set_value(std::move(r));
  });
  auto none = empty.get_future().get();
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);

  std::promise<caf::expected<std::vector<job>>> got;
  t0 = std::chrono::steady_clock::now();
  svc.fetch(f, 10s, [&](caf::expected<std::vector<job>> r) {
    got.set_value(std::move(r));
  });
  std::this_thread::sleep_for(200ms);
  // Enqueued by another "process": the NOTIFY wakes the waiter.
  pg_jobs other{test_config(schema_), 1};
  auto j = make("m");
  j.queue = "mail";
  other.enqueue({j});
  auto r = got.get_future().get();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].worker, "ext");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  // Bad input is refused at once.
  std::promise<caf::expected<std::vector<job>>> bad;
  f.max = 0;
  svc.fetch(f, 0ms, [&](caf::expected<std::vector<job>> r) {
    bad.set_value(std::move(r));
  });
  auto b = bad.get_future().get();
  ASSERT_FALSE(b);
  EXPECT_EQ(code_of(b.error()), errc::invalid_argument);
}

TEST_F(JobsTest, TwoNodesNeverRunAJobTwiceAtOnce) {
  start();
  auto cfg = config();
  engine other{*sys_, cfg};
  std::mutex mtx;
  std::map<std::int64_t, int> running, runs;
  bool overlap = false;
  auto spec = [&](std::size_t concurrency) {
    job_worker_spec w;
    w.kind = "shared";
    w.concurrency = concurrency;
    w.handle = [&](const job& j) {
      {
        std::lock_guard guard{mtx};
        if (running[j.id]++ > 0)
          overlap = true;
        ++runs[j.id];
      }
      std::this_thread::sleep_for(200us);
      std::lock_guard guard{mtx};
      --running[j.id];
      return job_result::ok();
    };
    return w;
  };
  service("n1").add_worker(spec(4));
  service("n2", &other).add_worker(spec(4));
  std::vector<job_request> batch(400, make("shared"));
  services_[0]->enqueue_blocking(batch);
  ASSERT_TRUE(eventually([&] {
    return count("state = 'completed'") == "400";
  }));
  std::lock_guard guard{mtx};
  EXPECT_FALSE(overlap);
  EXPECT_EQ(runs.size(), 400u);
  for (auto& [id, n] : runs)
    EXPECT_EQ(n, 1) << id;
  EXPECT_GT(services_[0]->stats().completed, 0u);
  EXPECT_GT(services_[1]->stats().completed, 0u);
  services_.clear();
}

TEST_F(JobsTest, TriggersMakeOneJobPerMatchingEventAcrossACrash) {
  auto& eng = start();
  auto& svc = service();
  job_trigger t;
  t.name = "confirm";
  t.query = query{{query_item{{"StudentSubscribed"}, {}}}};
  t.kind = "confirm";
  std::promise<caf::expected<bool>> made;
  svc.create_trigger(t, std::nullopt, [&](caf::expected<bool> r) {
    made.set_value(std::move(r));
  });
  auto created = made.get_future().get();
  ASSERT_TRUE(created && *created);
  auto append = [&](int from, int n) {
    for (int i = from; i < from + n; ++i) {
      ASSERT_TRUE(eng.append(
        {event{"StudentSubscribed", {"student:" + std::to_string(i)}, "x", {}},
         event{"Other", {}, "y", {}}}));
    }
  };
  append(0, 40);
  ASSERT_TRUE(eventually([&] {
    return count("trigger_name = 'confirm'") == "40";
  }));
  // A crash: the service goes away without a word, replays follow.
  services_.clear();
  exec_sql("UPDATE " + schema_
           + ".job_triggers SET position = 0"); // as if never checkpointed
  append(40, 20);
  auto& again = service("n1b");
  (void) again;
  ASSERT_TRUE(eventually([&] {
    return count("trigger_name = 'confirm'") == "60";
  }))
    << count("trigger_name = 'confirm'");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(count("trigger_name = 'confirm'"), "60");
  EXPECT_EQ(exec_sql("SELECT count(DISTINCT trigger_position) FROM " + schema_
                     + ".jobs"),
            "60");
  // Every job names an event that matches.
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_ + ".jobs j JOIN "
                     + schema_
                     + ".events e ON e.position = j.trigger_position WHERE "
                       "e.type = 'StudentSubscribed' AND j.args->'event'->>"
                       "'type' = 'StudentSubscribed'"),
            "60");
  // A second node following the same trigger adds nothing twice.
  auto& third = service("n3");
  (void) third;
  append(60, 10);
  ASSERT_TRUE(eventually([&] {
    return count("trigger_name = 'confirm'") == "70";
  }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(count("trigger_name = 'confirm'"), "70");
}

TEST_F(JobsTest, StopHandsBackJobsThatNeverStarted) {
  start();
  auto& svc = service();
  std::atomic<int> started{0};
  job_worker_spec w;
  w.kind = "slow";
  w.concurrency = 1;
  w.handle = [&](const job&) {
    ++started;
    std::this_thread::sleep_for(300ms);
    return job_result::ok();
  };
  svc.add_worker(w);
  std::vector<job_request> batch(5, make("slow"));
  svc.enqueue_blocking(batch);
  ASSERT_TRUE(eventually([&] {
    return started.load() >= 1;
  }));
  svc.stop();
  // The running one finished; the rest are available again, none running.
  EXPECT_EQ(count("state = 'running'"), "0");
  EXPECT_EQ(
    std::stoi(count("state = 'completed'"))
      + std::stoi(count("state IN ('available', 'scheduled') AND attempt = 0")),
    5);
  EXPECT_THROW(svc.add_worker(w), store_error);
}

TEST_F(JobsTest, BadWorkerSpecsAreRefused) {
  start();
  auto& svc = service();
  job_worker_spec none;
  none.kind = "k";
  EXPECT_THROW(svc.add_worker(none), store_error);
  job_worker_spec zero = none;
  zero.handle = [](const job&) {
    return job_result::ok();
  };
  zero.concurrency = 0;
  EXPECT_THROW(svc.add_worker(zero), store_error);
  job_worker_spec ok = zero;
  ok.concurrency = 1;
  svc.add_worker(ok);
  EXPECT_THROW(svc.add_worker(ok), store_error); // the kind is taken
}

} // namespace
} // namespace dcbd::test
