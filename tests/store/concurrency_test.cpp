// Concurrency on PostgreSQL: DCB conditions hold under races, positions stay
// gap-free and in commit order. Several stores on one schema stand for
// several nodes sharing the database.
#include "store/matching.hpp"
#include "store/validation.hpp"
#include "tests/support/pg_fixture.hpp"

#include <atomic>
#include <barrier>
#include <mutex>
#include <random>
#include <thread>

namespace dcbd::test {
namespace {

class PgConcurrency : public PgSchemaTest {
protected:
  // Runs `f(i)` on `n` threads that start together.
  template <class F>
  static void race(int n, F f) {
    std::barrier start{n};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        f(i);
      });
    for (auto& t : threads)
      t.join();
  }

  static query tag_query(const std::string& type, const std::string& tag) {
    return query{{query_item{{type}, {tag}}}};
  }
};

// K-20
TEST_F(PgConcurrency, ParallelUnconditionalAppendsAllSucceedGapFree) {
  auto store = open_store(16);
  std::atomic<int> ok{0};
  race(50, [&](int i) {
    store->append({event{"TestEvent", {"entity:" + std::to_string(i)}}});
    ++ok;
  });
  EXPECT_EQ(ok, 50);
  auto all = store->read(query::all());
  ASSERT_EQ(all.events.size(), 50u);
  for (std::size_t i = 0; i < all.events.size(); ++i)
    EXPECT_EQ(all.events[i].position, i + 1);
  EXPECT_EQ(all.head, 50u);
}

// K-21
TEST_F(PgConcurrency, ParallelConditionalAppendsOnDistinctScopesAllSucceed) {
  auto store = open_store(20);
  std::atomic<int> ok{0};
  race(20, [&](int i) {
    auto tag = "entity:E" + std::to_string(i);
    store->append({event{"TestEvent", {tag}}},
                  append_condition{tag_query("TestEvent", tag), 0});
    ++ok;
  });
  EXPECT_EQ(ok, 20);
  EXPECT_EQ(store->head(), 20u);
}

// K-22, with every writer on its own connection pool (as separate nodes).
TEST_F(PgConcurrency, ExactlyOneOfTenContestedAppendsWins) {
  std::vector<std::unique_ptr<pg_event_store>> nodes;
  for (int i = 0; i < 10; ++i)
    nodes.push_back(open_store(1));
  auto q = tag_query("TestEvent", "entity:CONTESTED");
  std::atomic<int> ok{0}, failed{0};
  race(10, [&](int i) {
    try {
      nodes[i]->append({event{"TestEvent", {"entity:CONTESTED"}}},
                       append_condition{q, 0});
      ++ok;
    } catch (const store_error& e) {
      EXPECT_EQ(e.code(), errc::append_condition_failed) << e.what();
      ++failed;
    }
  });
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(failed, 9);
  EXPECT_EQ(nodes[0]->read(q).events.size(), 1u);
}

// K-23
TEST_F(PgConcurrency, DisjointScopesDoNotBlockEachOther) {
  auto a = open_store(1);
  auto b = open_store(1);
  std::atomic<int> ok{0};
  race(2, [&](int i) {
    auto tag = i == 0 ? "thing:ALPHA" : "thing:BETA";
    (i == 0 ? a : b)
      ->append({event{"Thing", {tag}}},
               append_condition{tag_query("Thing", tag), 0});
    ++ok;
  });
  EXPECT_EQ(ok, 2);
}

TEST_F(PgConcurrency, EightRacersOnOneBoundaryExactlyOneWinsEachRound) {
  std::vector<std::unique_ptr<pg_event_store>> nodes;
  for (int i = 0; i < 8; ++i)
    nodes.push_back(open_store(1));
  auto q = tag_query("Seat", "seat:1A");
  for (int round = 0; round < 50; ++round) {
    auto after = nodes[0]->read(q).head;
    std::atomic<int> ok{0}, failed{0};
    race(8, [&](int i) {
      try {
        nodes[i]->append({event{"Seat", {"seat:1A"}, std::to_string(i)}},
                         append_condition{q, after});
        ++ok;
      } catch (const store_error& e) {
        EXPECT_EQ(e.code(), errc::append_condition_failed) << e.what();
        ++failed;
      }
    });
    ASSERT_EQ(ok, 1) << "round " << round;
    ASSERT_EQ(failed, 7) << "round " << round;
  }
  EXPECT_EQ(nodes[0]->read(q).events.size(), 50u);
}

TEST_F(PgConcurrency, UnrelatedBoundariesNeverConflict) {
  std::vector<std::unique_ptr<pg_event_store>> nodes;
  for (int i = 0; i < 4; ++i)
    nodes.push_back(open_store(3));
  std::atomic<int> failures{0};
  race(10, [&](int i) {
    auto& store = *nodes[i % nodes.size()];
    auto tag = "account:" + std::to_string(i);
    auto q = tag_query("Deposited", tag);
    std::uint64_t after = 0;
    for (int k = 0; k < 30; ++k) {
      try {
        after = store.append({event{"Deposited", {tag}}},
                             append_condition{q, after});
      } catch (const store_error&) {
        ++failures;
      }
    }
  });
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(nodes[0]->head(), 300u);
}

// The consistency oracle: for every successful conditional append, the last
// event matching its query before its first event is exactly the `after` it
// used (the position of the last matching event it saw).
TEST_F(PgConcurrency, RandomizedConsistencyOracle) {
  std::vector<std::unique_ptr<pg_event_store>> nodes;
  for (int i = 0; i < 4; ++i)
    nodes.push_back(open_store(5));
  struct success {
    query q;
    std::uint64_t after;
    std::uint64_t first;
  };
  std::mutex mtx;
  std::vector<success> successes;
  std::atomic<int> conflicts{0};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{4};
  race(20, [&](int i) {
    std::mt19937 rng{static_cast<unsigned>(1000 + i)};
    auto& store = *nodes[i % nodes.size()];
    auto pick = [&rng](int n) {
      return static_cast<int>(rng() % n);
    };
    while (std::chrono::steady_clock::now() < deadline) {
      query q;
      auto items = 1 + pick(2);
      for (int k = 0; k < items; ++k) {
        query_item item;
        if (pick(3) > 0)
          item.tags.push_back("k:" + std::to_string(pick(6)));
        if (item.tags.empty() || pick(2) == 0)
          item.types.push_back("T" + std::to_string(pick(3)));
        q.items.push_back(item);
      }
      auto last = store.read(q, read_options{{}, 1, true});
      std::uint64_t after = last.events.empty() ? 0
                                                : last.events.front().position;
      std::vector<event> events;
      for (int k = 0, n = 1 + pick(2); k < n; ++k)
        events.push_back(event{"T" + std::to_string(pick(3)),
                               {"k:" + std::to_string(pick(6))}});
      try {
        auto pos = store.append(events, append_condition{q, after});
        std::lock_guard guard{mtx};
        successes.push_back({q, after, pos - events.size() + 1});
      } catch (const store_error& e) {
        ASSERT_EQ(e.code(), errc::append_condition_failed) << e.what();
        ++conflicts;
      }
    }
  });
  auto log = nodes[0]->read(query::all()).events;
  for (std::size_t i = 0; i < log.size(); ++i)
    ASSERT_EQ(log[i].position, i + 1) << "positions must be gap-free";
  ASSERT_GT(successes.size(), 50u);
  EXPECT_GT(conflicts, 0) << "the workload should produce real conflicts";
  for (auto& s : successes) {
    normalize(s.q);
    std::uint64_t last_before = 0;
    for (std::uint64_t p = s.first - 1; p >= 1; --p)
      if (matches(s.q, log[p - 1].event)) {
        last_before = p;
        break;
      }
    ASSERT_EQ(last_before, s.after)
      << "append at " << s.first << " decided on a stale view";
  }
}

// Positions are handed out in commit order: a reader following the log by
// position never sees a position before all lower ones are visible.
TEST_F(PgConcurrency, FollowersNeverSeeGapsWhileWritersCommit) {
  auto writer = open_store(8);
  auto reader = open_store(1);
  std::atomic<bool> stop{false};
  std::atomic<int> gaps{0};
  std::uint64_t seen = 0;
  std::thread follower{[&] {
    while (!stop) {
      auto r = reader->read(query::all(), read_options{seen + 1, {}, false});
      for (const auto& e : r.events) {
        if (e.position != seen + 1)
          ++gaps;
        seen = e.position;
      }
    }
  }};
  race(8, [&](int i) {
    for (int k = 0; k < 40; ++k)
      writer->append({event{"E", {"w:" + std::to_string(i)}},
                      event{"E", {"w:" + std::to_string(i)}}});
  });
  stop = true;
  follower.join();
  EXPECT_EQ(gaps, 0);
  EXPECT_EQ(writer->head(), 640u);
}

} // namespace
} // namespace dcbd::test
