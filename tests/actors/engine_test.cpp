// The embedding API end to end: blocking and asynchronous calls.
#include "store/memory_store.hpp"
#include "tests/support/engine_fixture.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>

namespace dcbd::test {
namespace {

event make(std::string type, std::vector<std::string> tags) {
  return event{std::move(type), std::move(tags), "d", {}};
}

class Engine : public EngineTest {};

TEST_F(Engine, AppendThenReadBlocking) {
  auto& eng = start();
  auto ack = eng.append({make("A", {"k:1"}), make("B", {"k:2"})});
  ASSERT_TRUE(ack) << message_of(ack.error());
  EXPECT_EQ(ack->first_position, 1u);
  EXPECT_EQ(ack->last_position, 2u);
  auto r = eng.read(query{{query_item{{}, {"k:2"}}}});
  ASSERT_TRUE(r) << message_of(r.error());
  ASSERT_EQ(r->events.size(), 1u);
  EXPECT_EQ(r->events[0].position, 2u);
  EXPECT_EQ(r->head, 2u);
  auto h = eng.head();
  ASSERT_TRUE(h);
  EXPECT_EQ(*h, 2u);
}

TEST_F(Engine, ConditionalAppendConflictIsTypedError) {
  auto& eng = start();
  ASSERT_TRUE(eng.append({make("A", {"k:1"})}));
  auto q = query{{query_item{{"A"}, {}}}};
  auto r = eng.append({make("A", {"k:1"})}, append_condition{q, 0});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::append_condition_failed);
  auto ok = eng.append({make("A", {"k:1"})}, append_condition{q, 1});
  ASSERT_TRUE(ok) << message_of(ok.error());
  EXPECT_EQ(ok->last_position, 2u);
}

TEST_F(Engine, AsyncAppendCallsBack) {
  auto& eng = start();
  std::promise<caf::expected<append_ack>> p;
  eng.append({make("A", {"k:1"})}, std::nullopt,
             [&](caf::expected<append_ack> r) {
               p.set_value(std::move(r));
             });
  auto r = p.get_future().get();
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_EQ(r->last_position, 1u);
}

TEST_F(Engine, StreamDeliversEverythingInOrder) {
  auto& eng = start();
  std::vector<event> evs;
  for (int i = 0; i < 250; ++i)
    evs.push_back(make("A", {"k:" + std::to_string(i % 3)}));
  ASSERT_TRUE(eng.append(evs));
  std::vector<std::uint64_t> seen;
  stream_options chunking;
  chunking.chunk_events = 40;
  auto s = eng.stream(
    query::all(), {},
    [&](std::vector<sequenced_event>& c) {
      for (auto& e : c)
        seen.push_back(e.position);
    },
    2, chunking);
  ASSERT_TRUE(s) << message_of(s.error());
  EXPECT_EQ(s->head, 250u);
  EXPECT_EQ(s->events, 250u);
  ASSERT_EQ(seen.size(), 250u);
  for (std::size_t i = 0; i < seen.size(); ++i)
    EXPECT_EQ(seen[i], i + 1);
}

// Counts what the store actor reports through its hooks.
struct counting_metrics : store_metrics {
  void group_committed(std::size_t requests, std::size_t events,
                       std::chrono::nanoseconds latency) override {
    groups += 1;
    grouped_requests += requests;
    grouped_events += events;
    if (latency.count() > 0)
      timed += 1;
  }
  void request_finished(errc code, std::size_t events) override {
    std::lock_guard<std::mutex> guard{mtx};
    by_code[static_cast<int>(code)] += 1;
    finished_events += events;
  }
  void queue_depth(std::size_t) override {
    depth_reports += 1;
  }
  std::atomic<std::size_t> groups{0};
  std::atomic<std::size_t> grouped_requests{0};
  std::atomic<std::size_t> grouped_events{0};
  std::atomic<std::size_t> timed{0};
  std::atomic<std::size_t> depth_reports{0};
  std::mutex mtx;
  std::map<int, std::size_t> by_code;
  std::size_t finished_events = 0;
};

TEST_F(Engine, MetricsHooksSeeEveryGroupAndResult) {
  auto metrics = std::make_shared<counting_metrics>();
  auto cfg = config();
  cfg.metrics = metrics;
  auto& eng = start(cfg);
  ASSERT_TRUE(eng.append({make("A", {"k:1"}), make("A", {"k:2"})}));
  auto q = query{{query_item{{"A"}, {}}}};
  auto conflict = eng.append({make("A", {"k:3"})}, append_condition{q, 0});
  ASSERT_FALSE(conflict);
  ASSERT_TRUE(eng.append({make("B", {"k:3"})}, append_condition{q, 2}));
  // Invalid input stops at the appender: the store never sees it.
  auto bad = eng.append({make("", {"k:1"})});
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), errc::invalid_argument);
  auto stats = eng.stats();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->appended, 2u);
  EXPECT_EQ(stats->conflicts, 1u);
  EXPECT_EQ(stats->invalid, 0u);
  EXPECT_EQ(stats->events, 3u);
  EXPECT_EQ(metrics->groups.load(), stats->groups);
  EXPECT_EQ(metrics->grouped_requests.load(), 3u);
  EXPECT_EQ(metrics->grouped_events.load(), 3u);
  EXPECT_EQ(metrics->timed.load(), metrics->groups.load());
  EXPECT_EQ(metrics->depth_reports.load(), metrics->groups.load());
  std::lock_guard<std::mutex> guard{metrics->mtx};
  EXPECT_EQ(metrics->by_code[0], 2u);
  EXPECT_EQ(metrics->by_code[static_cast<int>(errc::append_condition_failed)],
            1u);
  EXPECT_EQ(metrics->finished_events, 3u);
}

TEST_F(Engine, AsyncReadProjectExecuteAndStream) {
  auto& eng = start();
  std::vector<event> evs;
  for (int i = 0; i < 30; ++i)
    evs.push_back(make(i % 2 == 0 ? "A" : "B", {"k:" + std::to_string(i % 3)}));
  ASSERT_TRUE(eng.append(evs));

  std::promise<caf::expected<read_result>> read_done;
  eng.read(query{{query_item{{"A"}, {}}}}, {},
           [&](caf::expected<read_result> r) {
             read_done.set_value(std::move(r));
           });
  auto r = read_done.get_future().get();
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_EQ(r->events.size(), 15u);

  std::vector<projector> ps;
  ps.push_back(make_projector<int>("as", query{{query_item{{"A"}, {}}}}, 0,
                                   [](int& n, const sequenced_event&) {
                                     ++n;
                                   }));
  std::promise<caf::expected<projection>> project_done;
  eng.project(ps, [&](caf::expected<projection> p) {
    project_done.set_value(std::move(p));
  });
  auto p = project_done.get_future().get();
  ASSERT_TRUE(p) << message_of(p.error());
  EXPECT_EQ(p->states->get<int>("as"), 15);
  ASSERT_TRUE(p->condition);
  EXPECT_EQ(p->condition->after, std::optional<std::uint64_t>{30});

  command cmd;
  cmd.name = "append-if-15";
  cmd.projectors = ps;
  cmd.decide = [](const decision_states& s) {
    if (s.get<int>("as") != 15)
      return verdict::reject("expected 15");
    return verdict::accept({event{"A", {"k:9"}, {}, {}}});
  };
  std::promise<caf::expected<command_outcome>> exec_done;
  eng.execute(cmd, [&](caf::expected<command_outcome> o) {
    exec_done.set_value(std::move(o));
  });
  auto o = exec_done.get_future().get();
  ASSERT_TRUE(o) << message_of(o.error());
  EXPECT_TRUE(o->accepted);
  EXPECT_EQ(o->last_position, 31u);
  // Now 16 events of type A: the same command is rejected.
  auto again = eng.execute(cmd);
  ASSERT_TRUE(again) << message_of(again.error());
  EXPECT_FALSE(again->accepted);
  EXPECT_EQ(again->rejection, "expected 15");

  std::promise<caf::expected<stream_summary>> stream_done;
  std::size_t streamed = 0; // only touched by the sink actor, then read here
  stream_options chunking;
  chunking.chunk_events = 4;
  eng.stream(
    query::all(), {},
    [&](std::vector<sequenced_event>& c) {
      streamed += c.size();
    },
    [&](caf::expected<stream_summary> s) {
      stream_done.set_value(s);
    },
    2, chunking);
  auto s = stream_done.get_future().get();
  ASSERT_TRUE(s) << message_of(s.error());
  EXPECT_EQ(s->events, 31u);
  EXPECT_EQ(streamed, 31u);
}

std::uint64_t served(engine& eng, cache_route r, cache_outcome o) {
  return eng.cache()->snapshot().served[static_cast<int>(r)]
                                       [static_cast<int>(o)];
}

// The blocking read and projection are served on the caller's thread from
// the cache after a read index, and still see every append another engine
// on the same schema acknowledged before they began (its commits reach
// this engine's cache only through the bus).
TEST_F(Engine, BlockingReadsAndDecisionsFromMemorySeeAnotherEnginesAppends) {
  auto& eng = start();
  engine other{*sys_, config()};
  std::vector<projector> ps;
  ps.push_back(make_projector<int>("ks", query{{query_item{{}, {"k:x"}}}}, 0,
                                   [](int& n, const sequenced_event&) {
                                     ++n;
                                   }));
  read_options last;
  last.limit = 1;
  last.backwards = true;
  for (int i = 1; i <= 200; ++i) {
    auto ack = other.append({make("A", {"k:x"})});
    ASSERT_TRUE(ack) << message_of(ack.error());
    auto r = eng.read(query{{query_item{{}, {"k:x"}}}}, last);
    ASSERT_TRUE(r) << message_of(r.error());
    ASSERT_EQ(r->events.size(), 1u) << i;
    EXPECT_EQ(r->events[0].position, ack->last_position) << i;
    EXPECT_GE(r->head, ack->last_position);
    auto p = eng.project(ps);
    ASSERT_TRUE(p) << message_of(p.error());
    EXPECT_EQ(p->states->get<int>("ks"), i);
    EXPECT_EQ(p->events_read, static_cast<std::uint64_t>(i));
    ASSERT_TRUE(p->condition);
    EXPECT_GE(p->condition->after.value_or(0), ack->last_position);
    if (HasFailure())
      return;
  }
  // Most from memory (a read that finds the cache behind the index waits
  // 50 ms for the bus, then goes to the readers).
  EXPECT_GT(served(eng, cache_route::project, cache_outcome::hit), 100u);
  EXPECT_GT(served(eng, cache_route::read, cache_outcome::hit), 100u);

  // Errors come back as they do from the readers.
  auto bad = eng.project(
    {make_projector<int>("", query{}, 0, [](int&, const sequenced_event&) {})});
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), errc::invalid_argument);
  auto boom = eng.project({make_projector<int>(
    "boom", query{}, 0, [](int&, const sequenced_event& e) {
      if (e.position == 3)
        throw std::runtime_error("three");
    })});
  ASSERT_FALSE(boom);
  EXPECT_EQ(code_of(boom.error()), errc::internal);
  EXPECT_NE(message_of(boom.error()).find("boom"), std::string::npos);
  auto unknown = eng.read(query{{query_item{{""}, {}}}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(code_of(unknown.error()), errc::invalid_argument);
}

// With a cache too small for the whole log, blocking projections go to the
// readers (the old part from the database) with the same answers.
TEST_F(Engine, BlockingDecisionsOverASmallCacheComeFromTheReaders) {
  auto cfg = config();
  cfg.cache_bytes = 4096;
  auto& eng = start(cfg);
  for (int i = 0; i < 10; ++i) {
    std::vector<event> evs;
    for (int j = 0; j < 30; ++j)
      evs.push_back(make(j % 2 == 0 ? "A" : "B", {"k:" + std::to_string(j)}));
    ASSERT_TRUE(eng.append(evs));
  }
  ASSERT_GT(eng.cache()->snapshot().lo, 0u);
  auto p
    = eng.project({make_projector<int>("as", query{{query_item{{"A"}, {}}}}, 0,
                                       [](int& n, const sequenced_event&) {
                                         ++n;
                                       })});
  ASSERT_TRUE(p) << message_of(p.error());
  EXPECT_EQ(p->states->get<int>("as"), 150);
  EXPECT_EQ(p->head, 300u);
  EXPECT_EQ(served(eng, cache_route::project, cache_outcome::hit), 0u);
  EXPECT_EQ(served(eng, cache_route::project, cache_outcome::partial), 1u);
}

TEST_F(Engine, StopAnswersEveryCallerAndKeepsAcknowledgedWrites) {
  auto& eng = start();
  constexpr int n = 200;
  std::atomic<int> answered{0};
  std::atomic<int> acked{0};
  std::atomic<std::uint64_t> acked_events{0};
  std::promise<void> all_answered;
  for (int i = 0; i < n; ++i)
    eng.append({make("A", {"k:" + std::to_string(i)})}, std::nullopt,
               [&](caf::expected<append_ack> r) {
                 if (r) {
                   acked += 1;
                   acked_events += r->last_position - r->first_position + 1;
                 }
                 if (++answered == n)
                   all_answered.set_value();
               });
  stop();
  ASSERT_EQ(all_answered.get_future().wait_for(std::chrono::seconds(30)),
            std::future_status::ready);
  auto rows = exec_sql("SELECT count(*) FROM " + schema_ + ".events");
  EXPECT_EQ(std::stoull(rows), acked_events.load());
  EXPECT_EQ(static_cast<std::uint64_t>(acked.load()), acked_events.load());
}

// The same engine over the in-memory store: the actor layer is not tied to
// PostgreSQL. Nothing here needs a database.
TEST(MemoryEngine, AppendsReadsStreamsAndRunsCommandsWithoutADatabase) {
  caf::actor_system_config cfg;
  configure_test_system(cfg);
  caf::actor_system sys{cfg};
  auto mem = std::make_shared<memory_event_store>();
  auto opened = std::make_shared<std::atomic<std::size_t>>(0);
  engine_config ec;
  ec.readers = 2;
  ec.store_factory = [mem, opened](std::size_t) {
    ++*opened;
    return mem;
  };
  {
    engine eng{sys, ec};
    auto ack = eng.append({make("A", {"k:2", "k:1"})});
    ASSERT_TRUE(ack) << message_of(ack.error());
    EXPECT_EQ(ack->last_position, 1u);
    auto q = query{{query_item{{"A"}, {}}}};
    auto conflict = eng.append({make("A", {"k:3"})}, append_condition{q, 0});
    ASSERT_FALSE(conflict);
    EXPECT_EQ(code_of(conflict.error()), errc::append_condition_failed);
    auto bad = eng.append({make("", {})});
    ASSERT_FALSE(bad);
    EXPECT_EQ(code_of(bad.error()), errc::invalid_argument);
    auto r = eng.read(query::all());
    ASSERT_TRUE(r) << message_of(r.error());
    ASSERT_EQ(r->events.size(), 1u);
    EXPECT_EQ(r->events[0].event.tags,
              (std::vector<std::string>{"k:1", "k:2"}));
    command cmd;
    cmd.name = "once";
    cmd.projectors.push_back(
      make_projector("count", q, 0, [](int& n, const sequenced_event&) {
        ++n;
      }));
    cmd.decide = [](const decision_states& s) {
      return s.get<int>("count") < 2 ? verdict::accept({make("A", {"k:9"})})
                                     : verdict::reject("enough");
    };
    auto first = eng.execute(cmd);
    ASSERT_TRUE(first) << message_of(first.error());
    EXPECT_TRUE(first->accepted);
    EXPECT_EQ(first->last_position, 2u);
    auto second = eng.execute(cmd);
    ASSERT_TRUE(second) << message_of(second.error());
    EXPECT_FALSE(second->accepted);
    EXPECT_EQ(second->rejection, "enough");
    std::uint64_t streamed = 0;
    auto s = eng.stream(query::all(), {}, [&](std::vector<sequenced_event>& c) {
      streamed += c.size();
    });
    ASSERT_TRUE(s) << message_of(s.error());
    EXPECT_EQ(streamed, 2u);
    EXPECT_EQ(s->head, 2u);
    auto st = eng.stats();
    ASSERT_TRUE(st);
    EXPECT_EQ(st->reconnects, 0u);
    EXPECT_EQ(st->appended, 2u);
  }
  EXPECT_EQ(mem->head(), 2u);
}

} // namespace
} // namespace dcbd::test
