// The engine with a read replica (engine_config::replica) on a real
// streaming standby: reads, streams, decision models and subscription
// catch-up see every acknowledged append, the standby serves them, and a
// standby that is down fails nothing.
#include "tests/support/engine_fixture.hpp"
#include "tests/support/replica_fixture.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>

namespace dcbd::test {
namespace {

using namespace std::chrono_literals;

event make(std::string type, std::vector<std::string> tags) {
  return event{std::move(type), std::move(tags), "d", {}};
}

query tagged(std::string tag) {
  return query{{query_item{{}, {std::move(tag)}}}};
}

// A decision model that counts the events of `tag`.
projector counter(const std::string& tag) {
  return make_projector("count", tagged(tag), std::uint64_t{0},
                        [](std::uint64_t& n, const sequenced_event&) {
                          ++n;
                        });
}

// The events a subscription delivered, by position.
class positions_seen {
public:
  void add(std::vector<bus_item>& xs) {
    std::lock_guard guard{mtx_};
    for (auto& x : xs)
      if (x.kind == bus_item_kind::event)
        seen_.push_back(x.position);
    cv_.notify_all();
  }

  bool wait_for(std::size_t n, std::chrono::milliseconds d = 30s) {
    std::unique_lock guard{mtx_};
    return cv_.wait_for(guard, d, [&] {
      return seen_.size() >= n;
    });
  }

  std::vector<std::uint64_t> get() {
    std::lock_guard guard{mtx_};
    return seen_;
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::uint64_t> seen_;
};

// The engine fixture on a schema of its own plus the standby.
class EngineReplica : public ReplicaTest {
protected:
  EngineReplica() {
    configure_test_system(sys_cfg_);
    sys_ = std::make_unique<caf::actor_system>(sys_cfg_);
  }

  ~EngineReplica() override {
    engines_.clear();
    sys_.reset();
  }

  void TearDown() override {
    engines_.clear();
    ReplicaTest::TearDown();
  }

  // Engine settings on this test's schema reading from the standby.
  engine_config config(std::size_t cache_bytes) {
    engine_config cfg;
    cfg.store = test_config(schema_);
    cfg.readers = 2;
    cfg.appenders = 2;
    cfg.timeout = 60s;
    cfg.cache_bytes = cache_bytes;
    cfg.replica = replica();
    return cfg;
  }

  engine& start(engine_config cfg) {
    engines_.push_back(std::make_unique<engine>(*sys_, std::move(cfg)));
    return *engines_.back();
  }

  caf::actor_system_config sys_cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  std::vector<std::unique_ptr<engine>> engines_;
};

TEST_F(EngineReplica, ReadsStreamsAndDecisionsSeeEveryAppendWithoutACache) {
  auto& eng = start(config(0));
  for (int i = 0; i < 150; ++i) {
    auto tag = "k:" + std::to_string(i % 10);
    auto ack = eng.append({make("E", {tag})});
    ASSERT_TRUE(ack) << message_of(ack.error());
    auto r = eng.read(tagged(tag));
    ASSERT_TRUE(r) << message_of(r.error());
    ASSERT_EQ(r->events.size(), static_cast<std::size_t>(i / 10 + 1))
      << "round " << i;
    EXPECT_EQ(r->events.back().position, ack->last_position);
    EXPECT_GE(r->head, ack->last_position);
    auto model = eng.project({counter(tag)});
    ASSERT_TRUE(model) << message_of(model.error());
    EXPECT_EQ(model->states->get<std::uint64_t>("count"),
              static_cast<std::uint64_t>(i / 10 + 1));
    ASSERT_TRUE(model->condition);
    EXPECT_GE(model->condition->after.value_or(0), ack->last_position);
  }
  std::size_t streamed = 0;
  auto sum = eng.stream(query::all(), {},
                        [&](std::vector<sequenced_event>& chunk) {
                          streamed += chunk.size();
                        });
  ASSERT_TRUE(sum) << message_of(sum.error());
  EXPECT_EQ(streamed, 150u);
  EXPECT_EQ(sum->head, 150u);
  auto s = eng.replica();
  EXPECT_GT(s.by_replica(), 0u);
  EXPECT_EQ(s.reads[static_cast<std::size_t>(replica_route::primary_failed)],
            0u);
  // The head and the appends never asked the standby; the read index did
  // (the primary's head, once per read or fewer).
  EXPECT_GT(eng.index_stats().rounds, 0u);
}

TEST_F(EngineReplica,
       ReadsOnAnotherEngineSeeEveryAppendThroughCacheAndStandby) {
  // A writes; B (its cache hears of A's commits a little later) reads
  // through its cache, its read index and the standby.
  auto& a = start(config(0));
  auto& b = start(config(std::size_t{64} << 20));
  for (int i = 0; i < 200; ++i) {
    auto tag = "k:" + std::to_string(i);
    auto ack = a.append({make("E", {tag})});
    ASSERT_TRUE(ack) << message_of(ack.error());
    auto r = b.read(tagged(tag));
    ASSERT_TRUE(r) << message_of(r.error());
    ASSERT_EQ(r->events.size(), 1u) << "round " << i;
    EXPECT_EQ(r->events[0].position, ack->last_position);
    read_options from;
    from.from = ack->last_position;
    auto tail = b.read(query::all(), from);
    ASSERT_TRUE(tail) << message_of(tail.error());
    ASSERT_FALSE(tail->events.empty()) << "round " << i;
    EXPECT_EQ(tail->events.front().position, ack->last_position);
  }
  // B's bus fed its cache with reads past its head, and those went through
  // the standby too.
  EXPECT_GT(b.replica().by_replica(), 0u);
}

TEST_F(EngineReplica, ReadsSeeEveryAppendWhileReplayIsPaused) {
  auto& a = start(config(0));
  auto& b = start(config(std::size_t{64} << 20));
  ASSERT_TRUE(a.append({make("E", {"k:first"})}));
  ASSERT_TRUE(standby_caught_up());
  ASSERT_TRUE(pause_replay());
  for (int i = 0; i < 50; ++i) {
    auto tag = "k:" + std::to_string(i);
    auto ack = a.append({make("E", {tag})});
    ASSERT_TRUE(ack) << message_of(ack.error());
    for (auto* eng : {&a, &b}) {
      auto r = eng->read(tagged(tag));
      ASSERT_TRUE(r) << message_of(r.error());
      ASSERT_EQ(r->events.size(), 1u) << "round " << i;
      EXPECT_EQ(r->events[0].position, ack->last_position);
    }
  }
  // A's reads and B's feed of its cache went to the primary; nothing failed.
  for (auto* eng : {&a, &b}) {
    auto s = eng->replica();
    EXPECT_GT(s.reads[static_cast<std::size_t>(replica_route::primary_lagging)],
              0u);
    EXPECT_EQ(s.reads[static_cast<std::size_t>(replica_route::primary_failed)],
              0u);
  }
  resume_replay();
  ASSERT_TRUE(standby_caught_up());
  auto served = a.replica().by_replica();
  auto r = a.read(query::all());
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_EQ(r->events.size(), 51u);
  EXPECT_GT(a.replica().by_replica(), served);
}

TEST_F(EngineReplica, SubscriptionsCatchUpFromTheStandby) {
  {
    auto writer = open_store();
    std::vector<event> events;
    for (int i = 0; i < 600; ++i)
      events.push_back(make(i % 2 ? "A" : "B", {"k"}));
    writer->append(events);
  }
  ASSERT_TRUE(standby_caught_up());
  auto cfg = config(0);
  cfg.bus.feed_page = 100;
  auto& eng = start(std::move(cfg));
  positions_seen seen;
  auto sub = eng.subscribe(
    query{{query_item{{"A"}, {}}}}, 0,
    [&](std::vector<bus_item>& xs) {
      seen.add(xs);
    },
    [](const bus_end&) {});
  ASSERT_TRUE(seen.wait_for(300));
  auto got = seen.get();
  ASSERT_EQ(got.size(), 300u);
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], 2 * i + 2) << "at " << i;
  // Then live, with no gap between the catch-up and the feed.
  ASSERT_TRUE(eng.append({make("A", {"k"})}));
  ASSERT_TRUE(seen.wait_for(301));
  EXPECT_EQ(seen.get().back(), 601u);
  sub.cancel();
  EXPECT_GT(eng.replica().by_replica(), 0u);
}

TEST_F(EngineReplica, AStandbyThatIsDownFailsNoCall) {
  auto cfg = config(0);
  cfg.replica.dsn = "host=127.0.0.1 port=" + std::to_string(closed_port())
                    + " user=postgres dbname=postgres";
  auto& eng = start(std::move(cfg));
  for (int i = 0; i < 20; ++i) {
    auto ack = eng.append({make("E", {"k"})});
    ASSERT_TRUE(ack) << message_of(ack.error());
    auto r = eng.read(tagged("k"));
    ASSERT_TRUE(r) << message_of(r.error());
    EXPECT_EQ(r->events.size(), static_cast<std::size_t>(i + 1));
    auto model = eng.project({counter("k")});
    ASSERT_TRUE(model) << message_of(model.error());
    EXPECT_EQ(model->states->get<std::uint64_t>("count"),
              static_cast<std::uint64_t>(i + 1));
  }
  auto s = eng.replica();
  EXPECT_EQ(s.by_replica(), 0u);
  EXPECT_GE(s.by_primary(), 40u);
  EXPECT_FALSE(s.up);
}

TEST_F(EngineReplica, WithoutADsnNothingReadsFromAStandby) {
  auto cfg = config(0);
  cfg.replica = {};
  auto& eng = start(std::move(cfg));
  ASSERT_TRUE(eng.append({make("E", {"k"})}));
  auto r = eng.read(tagged("k"));
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_EQ(r->events.size(), 1u);
  auto s = eng.replica();
  EXPECT_EQ(s.by_replica() + s.by_primary(), 0u);
  // Neither a cache nor a standby: no read index either, as before.
  EXPECT_EQ(eng.index_stats().rounds, 0u);
}

} // namespace
} // namespace dcbd::test
