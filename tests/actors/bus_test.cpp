// The event bus through the engine, on a real PostgreSQL schema: catch-up
// then live, gap-free and duplicate-free against a final read of the same
// query, the `prev` chain, slow subscribers, sparse queries, heartbeats, bad
// input, and commits of another engine on the same schema.
#include "store/cached_store.hpp"
#include "store/event_cache.hpp"
#include "store/memory_store.hpp"
#include "store/read_index.hpp"
#include "tests/support/engine_fixture.hpp"

#include <gtest/gtest.h>
#include <pqxx/connection>
#include <pqxx/nontransaction>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

namespace dcbd::test {
namespace {

using namespace std::chrono_literals;

event make(std::string type, std::vector<std::string> tags) {
  return event{std::move(type), std::move(tags), "d", {}};
}

query types(std::vector<std::string> ts) {
  return query{{query_item{std::move(ts), {}}}};
}

query tags(std::vector<std::string> ts) {
  return query{{query_item{{}, std::move(ts)}}};
}

/// Collects what one subscription delivers.
class collector {
public:
  void add(std::vector<bus_item>& xs) {
    std::lock_guard guard{mtx_};
    for (auto& x : xs)
      items_.push_back(std::move(x));
    cv_.notify_all();
  }

  void finish(const bus_end& e) {
    std::lock_guard guard{mtx_};
    end_ = e;
    cv_.notify_all();
  }

  /// Waits up to `d` for `pred()` (called under the lock).
  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds d = 20s) {
    std::unique_lock guard{mtx_};
    return cv_.wait_for(guard, d, [&] {
      return pred();
    });
  }

  bool wait_events(std::size_t n, std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return count_events() >= n;
      },
      d);
  }

  bool wait_kind(bus_item_kind k, std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return std::any_of(items_.begin(), items_.end(), [k](auto& x) {
          return x.kind == k;
        });
      },
      d);
  }

  /// Waits for a checkpoint at `position` or beyond.
  bool wait_checkpoint(std::uint64_t position,
                       std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return std::any_of(items_.begin(), items_.end(), [&](auto& x) {
          return x.kind == bus_item_kind::checkpoint && x.position >= position;
        });
      },
      d);
  }

  bool wait_end(std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return end_.has_value();
      },
      d);
  }

  std::vector<bus_item> items() {
    std::lock_guard guard{mtx_};
    return items_;
  }

  std::optional<bus_end> end() {
    std::lock_guard guard{mtx_};
    return end_;
  }

  std::vector<std::uint64_t> events() {
    std::lock_guard guard{mtx_};
    std::vector<std::uint64_t> out;
    for (auto& x : items_)
      if (x.kind == bus_item_kind::event)
        out.push_back(x.position);
    return out;
  }

  std::size_t count(bus_item_kind k) {
    std::lock_guard guard{mtx_};
    return static_cast<std::size_t>(
      std::count_if(items_.begin(), items_.end(), [k](auto& x) {
        return x.kind == k;
      }));
  }

private:
  // Under the lock.
  std::size_t count_events() const {
    return static_cast<std::size_t>(
      std::count_if(items_.begin(), items_.end(), [](auto& x) {
        return x.kind == bus_item_kind::event;
      }));
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<bus_item> items_;
  std::optional<bus_end> end_;
};

subscription follow(engine& eng, query q, std::uint64_t after, collector& c,
                    subscribe_options opts = {}) {
  return eng.subscribe(
    std::move(q), after,
    [&c](std::vector<bus_item>& xs) {
      c.add(xs);
    },
    [&c](const bus_end& e) {
      c.finish(e);
    },
    opts);
}

std::vector<std::uint64_t> oracle(engine& eng, const query& q,
                                  std::uint64_t after) {
  std::vector<std::uint64_t> out;
  read_options o;
  o.from = after + 1;
  auto s = eng.stream(q, o, [&](std::vector<sequenced_event>& chunk) {
    for (auto& e : chunk)
      out.push_back(e.position);
  });
  EXPECT_TRUE(s) << message_of(s.error());
  return out;
}

// The last match at or below `after` (the first event's prev).
std::uint64_t prev_of(engine& eng, const query& q, std::uint64_t after) {
  if (after == 0)
    return 0;
  read_options o;
  o.from = after;
  o.limit = 1;
  o.backwards = true;
  auto r = eng.read(q, o);
  EXPECT_TRUE(r) << message_of(r.error());
  return r && !r->events.empty() ? r->events.front().position : 0;
}

// What every subscription must satisfy: the events are exactly the
// oracle's after `after` (a prefix of it when `prefix`), each event's prev
// chains to the one before (the first to the last match at or below
// `after`), and no checkpoint or caught_up claims a match not yet
// delivered.
void check_stream(engine& eng, const query& q, std::uint64_t after,
                  const std::vector<bus_item>& items, bool prefix = false) {
  auto want = oracle(eng, q, after);
  std::vector<std::uint64_t> got;
  auto prev = prev_of(eng, q, after);
  for (auto& x : items) {
    if (x.kind == bus_item_kind::event) {
      ASSERT_TRUE(x.event);
      EXPECT_EQ(x.event->position, x.position);
      EXPECT_EQ(x.prev, prev) << "at position " << x.position;
      prev = x.position;
      got.push_back(x.position);
    } else if (x.kind == bus_item_kind::checkpoint
               || x.kind == bus_item_kind::caught_up) {
      auto owed = std::count_if(want.begin(), want.end(), [&](auto p) {
        return p <= x.position;
      });
      EXPECT_EQ(static_cast<std::size_t>(owed), got.size())
        << to_string(x.kind) << " at " << x.position
        << " passes an undelivered match";
      // API.md §5: a position never beyond the head it reports.
      EXPECT_LE(x.position, x.head) << to_string(x.kind);
    }
  }
  if (prefix) {
    ASSERT_LE(got.size(), want.size());
    want.resize(got.size());
  }
  EXPECT_EQ(got, want);
}

class Bus : public EngineTest {
protected:
  // Collectors outlive the engine (stopped in TearDown), which ends every
  // subscription into them.
  collector& fresh() {
    return collectors_.emplace_back();
  }

  std::deque<collector> collectors_;

  void slow_subscriber(std::size_t recent);

  engine_config fast() {
    auto cfg = config();
    cfg.bus.tick = 20ms;
    cfg.bus.poll = 200ms;
    cfg.bus.checkpoint_interval = 100ms;
    return cfg;
  }

  /// The bus's head once it reaches `n` or 10 s passed. The store announces
  /// commits to the bus after acknowledging them, and the bus learns the
  /// head only after it started: wait for it before a test that means to
  /// watch the live part.
  static std::uint64_t bus_head_at_least(engine& eng, std::uint64_t n) {
    auto head = [&] {
      auto stats = eng.bus_stats();
      return stats ? stats->head : 0;
    };
    for (auto until = std::chrono::steady_clock::now() + 10s;
         head() < n && std::chrono::steady_clock::now() < until;)
      std::this_thread::sleep_for(5ms);
    return head();
  }
};

TEST_F(Bus, CatchesUpThenFollowsLiveWithAPrevChain) {
  auto& eng = start(fast());
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(eng.append(
      {make(i % 3 == 0 ? "A" : "B", {"k:" + std::to_string(i % 4)})}));
  // Wait until the bus knows the history, so that what follows is the
  // live part.
  ASSERT_EQ(bus_head_at_least(eng, 50), 50u);
  std::vector<std::pair<query, std::uint64_t>> subs{
    {query::all(), 0},      {types({"A"}), 0},  {tags({"k:1"}), 0},
    {query::all(), 20},     {types({"A"}), 20}, {tags({"k:1"}), 33},
    {types({"A", "B"}), 49}};
  std::vector<collector*> cs;
  std::vector<subscription> handles;
  for (std::size_t i = 0; i < subs.size(); ++i) {
    cs.push_back(&fresh());
    handles.push_back(follow(eng, subs[i].first, subs[i].second, *cs[i]));
  }
  for (int i = 50; i < 100; ++i)
    ASSERT_TRUE(eng.append(
      {make(i % 3 == 0 ? "A" : "B", {"k:" + std::to_string(i % 4)})}));
  for (std::size_t i = 0; i < subs.size(); ++i) {
    auto want = oracle(eng, subs[i].first, subs[i].second);
    ASSERT_TRUE(cs[i]->wait_events(want.size())) << "subscription " << i;
    EXPECT_EQ(cs[i]->count(bus_item_kind::caught_up), 1u);
    check_stream(eng, subs[i].first, subs[i].second, cs[i]->items());
    // The log as it was before subscribing is history, not a delivery
    // whose latency counts.
    for (auto& item : cs[i]->items()) {
      if (item.kind == bus_item_kind::event && item.position <= 50) {
        EXPECT_FALSE(item.live)
          << "subscription " << i << " at " << item.position;
      }
    }
  }
  // Nothing more arrives than was appended.
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(cs[0]->events().size(), 100u);
  auto stats = eng.bus_stats();
  ASSERT_TRUE(stats) << message_of(stats.error());
  EXPECT_EQ(stats->head, 100u);
  EXPECT_EQ(stats->subscriptions, subs.size());
}

TEST_F(Bus, ConcurrentWritersAndFailingConditionsNoGapsNoDuplicates) {
  auto cfg = fast();
  cfg.bus.queue_events = 64; // small queues: falling behind happens too
  auto& eng = start(cfg);
  std::vector<std::pair<query, std::uint64_t>> subs{
    {query::all(), 0},
    {types({"A"}), 0},
    {tags({"w:3"}), 0},
    {query{{query_item{{"B"}, {"w:1"}}, query_item{{"A"}, {"w:2"}}}}, 0}};
  std::vector<collector*> cs;
  for (std::size_t i = 0; i < subs.size() + 2; ++i)
    cs.push_back(&fresh());
  std::vector<subscription> handles;
  for (std::size_t i = 0; i < subs.size(); ++i)
    handles.push_back(follow(eng, subs[i].first, 0, *cs[i]));
  std::atomic<int> conflicts{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 8; ++w)
    writers.emplace_back([&, w] {
      for (int i = 0; i < 60; ++i) {
        auto tag = "w:" + std::to_string(w);
        std::vector<event> evs{make(i % 2 ? "A" : "B", {tag}),
                               make("C", {tag, "n:" + std::to_string(i)})};
        std::optional<append_condition> cond;
        if (i % 5 == 0) // often stale: fails under contention
          cond = append_condition{tags({tag}), std::uint64_t{1}};
        auto r = eng.append(std::move(evs), cond);
        if (!r) {
          EXPECT_EQ(code_of(r.error()), errc::append_condition_failed);
          ++conflicts;
        }
      }
    });
  // Two more subscribers join while the writers run.
  std::this_thread::sleep_for(50ms);
  auto mid = eng.head();
  ASSERT_TRUE(mid);
  subs.push_back({query::all(), *mid / 2});
  subs.push_back({types({"C"}), *mid});
  handles.push_back(follow(eng, subs[4].first, subs[4].second, *cs[4]));
  handles.push_back(follow(eng, subs[5].first, subs[5].second, *cs[5]));
  for (auto& t : writers)
    t.join();
  EXPECT_GT(conflicts.load(), 0);
  for (std::size_t i = 0; i < subs.size(); ++i) {
    auto want = oracle(eng, subs[i].first, subs[i].second);
    ASSERT_TRUE(cs[i]->wait_events(want.size())) << "subscription " << i;
    check_stream(eng, subs[i].first, subs[i].second, cs[i]->items());
  }
}

TEST_F(Bus, CatchUpToLiveRaceRepeatedJustBelowTheHead) {
  auto& eng = start(fast());
  ASSERT_TRUE(eng.append({make("A", {"x:1"}), make("B", {"x:1"})}));
  std::atomic<bool> stop{false};
  std::thread writer{[&] {
    int i = 0;
    while (!stop)
      (void) eng.append({make(++i % 2 ? "A" : "B", {"x:1"})});
  }};
  // Stops and joins the writer however the test leaves (an ASSERT returns).
  struct joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~joiner() {
      stop = true;
      if (t.joinable())
        t.join();
    }
  } join_writer{stop, writer};
  std::mt19937 rng{7};
  for (int round = 0; round < 60; ++round) {
    auto h = eng.head();
    ASSERT_TRUE(h);
    auto after = *h - std::min<std::uint64_t>(*h, rng() % 4);
    auto q = round % 2 ? query::all() : types({"A"});
    auto& c = fresh();
    auto sub = follow(eng, q, after, c);
    ASSERT_TRUE(c.wait_events(8))
      << "round " << round << " after " << after << ": "
      << (c.end() ? c.end()->message : "not ended");
    sub.cancel();
    ASSERT_TRUE(c.wait_end());
    check_stream(eng, q, after, c.items(), true);
    ASSERT_FALSE(HasFailure()) << "round " << round << " after " << after;
  }
}

// A subscriber that acknowledges slowly during a burst; `recent` is the
// bus's window of recent events (small: catching up reads the database).
void Bus::slow_subscriber(std::size_t recent) {
  auto cfg = fast();
  cfg.bus.queue_events = 16;
  cfg.bus.recent_events = recent;
  auto& eng = start(cfg);
  auto& slow = fresh();
  // Acknowledges each batch from another thread after a pause, so the bus
  // queue overflows during the burst.
  struct pacer {
    std::mutex mtx;
    std::deque<std::function<void(bool)>> acks;
    std::atomic<bool> done{false};
    std::thread thread{[this] {
      while (!done) {
        std::function<void(bool)> ack;
        {
          std::lock_guard guard{mtx};
          if (!acks.empty()) {
            ack = std::move(acks.front());
            acks.pop_front();
          }
        }
        std::this_thread::sleep_for(ack ? 2ms : 1ms);
        if (ack)
          ack(true);
      }
    }};
    ~pacer() {
      done = true;
      thread.join();
    }
  };
  auto p = std::make_shared<pacer>();
  subscribe_options opts;
  opts.credit = 8;
  auto sub = eng.subscribe_paced(
    query::all(), 0,
    [&slow, p](std::vector<bus_item>& xs, std::function<void(bool)> ack) {
      slow.add(xs);
      std::lock_guard guard{p->mtx};
      p->acks.push_back(std::move(ack));
    },
    [&slow](const bus_end& e) {
      slow.finish(e);
    },
    opts);
  auto& fast_sub = fresh();
  auto other = follow(eng, query::all(), 0, fast_sub);
  // Both live before the burst.
  for (auto* c : {&slow, &fast_sub})
    ASSERT_TRUE(c->wait_kind(bus_item_kind::caught_up));
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w)
    writers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        std::vector<event> evs;
        for (int k = 0; k < 10; ++k)
          evs.push_back(make("E", {"k:" + std::to_string(k)}));
        ASSERT_TRUE(eng.append(std::move(evs)));
      }
    });
  for (auto& t : writers)
    t.join();
  ASSERT_TRUE(slow.wait_events(2000, 60s));
  ASSERT_TRUE(fast_sub.wait_events(2000));
  check_stream(eng, query::all(), 0, slow.items());
  check_stream(eng, query::all(), 0, fast_sub.items());
  // Every event was committed after both had caught up: each is a delivery
  // whose latency counts, also those the slow one got back from memory or
  // from a read after it fell behind.
  for (auto* c : {&slow, &fast_sub}) {
    auto items = c->items();
    EXPECT_EQ(std::count_if(items.begin(), items.end(),
                            [](const bus_item& i) {
                              return i.kind == bus_item_kind::event && !i.live;
                            }),
              0);
  }
  auto stats = eng.bus_stats();
  ASSERT_TRUE(stats);
  EXPECT_GT(stats->fell_behind, 0u);
  if (recent < 100)
    EXPECT_GT(stats->catch_up_reads, 0u);
  else
    EXPECT_GT(stats->replayed, 0u);
}

TEST_F(Bus, SlowSubscriberCatchesUpFromMemoryYetMissesNothing) {
  slow_subscriber(65'536);
}

TEST_F(Bus, SlowSubscriberPastTheRecentWindowReadsAndMissesNothing) {
  slow_subscriber(8);
}

TEST_F(Bus, SparseQueryCheckpointsAdvanceWithoutPassingAMatch) {
  auto& eng = start(fast());
  auto& c = fresh();
  auto sub = follow(eng, types({"Rare"}), 0, c);
  std::vector<std::uint64_t> rare;
  auto until = std::chrono::steady_clock::now() + 800ms;
  int i = 0;
  while (std::chrono::steady_clock::now() < until) {
    auto ack = eng.append(
      {make(++i % 97 == 0 ? "Rare" : "Noise", {"n:" + std::to_string(i)})});
    ASSERT_TRUE(ack);
    if (i % 97 == 0)
      rare.push_back(ack->last_position);
  }
  auto h = eng.head();
  ASSERT_TRUE(h);
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(c.wait_events(rare.size()));
  // A checkpoint reaches the head even though no event is near it (within
  // a checkpoint interval and a tick; longer on a loaded machine).
  ASSERT_TRUE(c.wait_checkpoint(*h, 10s));
  auto items = c.items();
  std::vector<std::uint64_t> cps;
  for (auto& x : items)
    if (x.kind == bus_item_kind::checkpoint)
      cps.push_back(x.position);
  ASSERT_GE(cps.size(), 3u);
  EXPECT_TRUE(std::is_sorted(cps.begin(), cps.end()));
  EXPECT_EQ(cps.back(), *h);
  check_stream(eng, types({"Rare"}), 0, items);
  // Resuming from the last checkpoint delivers nothing old.
  auto& again = fresh();
  auto sub2 = follow(eng, types({"Rare"}), cps.back(), again);
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(again.events().empty());
  EXPECT_EQ(again.count(bus_item_kind::caught_up), 1u);
}

TEST_F(Bus, HeartbeatsWhileIdleAndThenTheNextAppend) {
  auto& eng = start(fast());
  ASSERT_TRUE(eng.append({make("A", {})}));
  // Heartbeats wait for the bus to know the head (MemoryBus.
  // NoHeartbeatBeforeTheBusKnowsTheHead); this test counts them once it
  // does, however slowly the bus started on a loaded machine.
  ASSERT_EQ(bus_head_at_least(eng, 1), 1u);
  auto& c = fresh();
  subscribe_options opts;
  opts.heartbeat = 100ms;
  auto sub = follow(eng, query::all(), 1, c, opts);
  std::this_thread::sleep_for(650ms);
  auto beats = c.count(bus_item_kind::heartbeat);
  EXPECT_GE(beats, 3u);
  EXPECT_LE(beats, 8u);
  for (auto& x : c.items()) {
    if (x.kind == bus_item_kind::heartbeat) {
      EXPECT_EQ(x.head, 1u);
    }
  }
  ASSERT_TRUE(eng.append({make("B", {})}));
  ASSERT_TRUE(c.wait_events(1, 5s));
  auto evs = c.events();
  EXPECT_EQ(evs, std::vector<std::uint64_t>{2});
}

// A heartbeat comes every `heartbeat`, also while events flow (API.md §5:
// "every --dcbd.subscribe-heartbeat-ms"), carrying the head.
TEST_F(Bus, HeartbeatsComeWhileEventsFlowToo) {
  auto& eng = start(fast());
  auto& c = fresh();
  subscribe_options opts;
  opts.heartbeat = 100ms;
  auto sub = follow(eng, query::all(), 0, c, opts);
  ASSERT_TRUE(c.wait_kind(bus_item_kind::caught_up));
  std::size_t appended = 0;
  auto until = std::chrono::steady_clock::now() + 700ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(eng.append({make("A", {})}));
    ++appended;
    std::this_thread::sleep_for(2ms);
  }
  ASSERT_TRUE(c.wait_events(appended));
  std::size_t seen = 0, beats = 0;
  for (auto& x : c.items()) {
    if (x.kind == bus_item_kind::event)
      ++seen;
    else if (x.kind == bus_item_kind::heartbeat && seen > 0 && seen < appended)
      ++beats;
  }
  EXPECT_GE(beats, 3u) << appended << " events in 700 ms";
}

TEST_F(Bus, BadQueryOrPositionEndsWithInvalidArgument) {
  auto& eng = start(fast());
  ASSERT_TRUE(eng.append({make("A", {})}));
  auto& empty_item = fresh();
  follow(eng, query{{query_item{}}}, 0, empty_item);
  ASSERT_TRUE(empty_item.wait_end());
  EXPECT_EQ(empty_item.end()->code, errc::invalid_argument);
  auto& past_head = fresh();
  follow(eng, query::all(), 5, past_head);
  ASSERT_TRUE(past_head.wait_end());
  EXPECT_EQ(past_head.end()->code, errc::invalid_argument);
  EXPECT_NE(past_head.end()->message.find("past the head"), std::string::npos);
  auto& huge = fresh();
  follow(eng, query::all(), ~std::uint64_t{0}, huge);
  ASSERT_TRUE(huge.wait_end());
  EXPECT_EQ(huge.end()->code, errc::invalid_argument);
  EXPECT_TRUE(empty_item.events().empty());
  // The bus is fine afterwards.
  auto& ok = fresh();
  follow(eng, query::all(), 0, ok);
  ASSERT_TRUE(ok.wait_events(1));
}

TEST_F(Bus, CancelEndsOneAndStoppingTheNodeEndsAll) {
  auto& eng = start(fast());
  auto& a = fresh();
  auto& b = fresh();
  auto sa = follow(eng, query::all(), 0, a);
  auto sb = follow(eng, types({"A"}), 0, b);
  ASSERT_TRUE(eng.append({make("A", {})}));
  ASSERT_TRUE(a.wait_events(1));
  sa.cancel();
  ASSERT_TRUE(a.wait_end());
  EXPECT_EQ(a.end()->code, errc::none);
  EXPECT_EQ(a.end()->position, 1u);
  stop();
  ASSERT_TRUE(b.wait_end());
  EXPECT_EQ(b.end()->code, errc::unavailable);
}

TEST_F(Bus, CommitsOfAnotherEngineOnTheSchemaAreDelivered) {
  auto& writer = start(fast());
  auto ec = fast();
  ec.bus.poll = 300ms;
  other_node second{ec};
  auto& reader = second.eng;
  ASSERT_TRUE(writer.append({make("A", {"n:1"})}));
  auto& c = fresh();
  auto sub = follow(reader, query::all(), 0, c);
  ASSERT_TRUE(c.wait_events(1));
  // Both write at once; the second engine's bus interleaves its own
  // announcements with what it reads of the first's.
  std::thread t{[&] {
    for (int i = 0; i < 100; ++i)
      ASSERT_TRUE(writer.append({make("A", {"w:1"})}));
  }};
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(reader.append({make("B", {"w:2"})}));
  t.join();
  ASSERT_TRUE(c.wait_events(201));
  check_stream(reader, query::all(), 0, c.items());
  // Kill the LISTEN backend: the listener reconnects, and polling covers
  // the notifications lost meanwhile.
  auto until = std::chrono::steady_clock::now() + 10s;
  while (reader.listener_pid() == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  auto pid = reader.listener_pid();
  ASSERT_NE(pid, 0);
  {
    pqxx::connection conn{test_config(schema_).dsn};
    pqxx::nontransaction tx{conn};
    tx.exec_params("SELECT pg_terminate_backend($1)", pid);
  }
  ASSERT_TRUE(writer.append({make("A", {"n:2"})}));
  ASSERT_TRUE(c.wait_events(202, 5s));
  until = std::chrono::steady_clock::now() + 10s;
  while ((reader.listener_pid() == 0 || reader.listener_pid() == pid)
         && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  EXPECT_NE(reader.listener_pid(), pid);
  EXPECT_NE(reader.listener_pid(), 0);
  check_stream(reader, query::all(), 0, c.items());
}

// The NOTIFY of the node's own commit often reaches the bus before the
// store actor's announcement of it; the bus waits for the announcement
// rather than read its own commit back from the database (a query per
// group that cost appends about a fifth of their rate at 100 connections).
TEST_F(Bus, OwnCommitsAreNotReadBack) {
  auto ec = fast();
  ec.bus.poll = 60s; // only NOTIFYs wake it
  ec.bus.local_grace = 10s;
  auto& eng = start(ec);
  ASSERT_TRUE(eng.append({make("A", {})}));
  ASSERT_EQ(bus_head_at_least(eng, 1), 1u);
  auto before = eng.bus_stats();
  ASSERT_TRUE(before) << message_of(before.error());
  constexpr std::uint64_t n = 300;
  for (std::uint64_t i = 0; i < n; ++i)
    ASSERT_TRUE(eng.append({make("A", {"own:" + std::to_string(i)})}));
  ASSERT_EQ(bus_head_at_least(eng, n + 1), n + 1);
  // Wake-ups still in the mailbox are handled.
  std::this_thread::sleep_for(200ms);
  auto after = eng.bus_stats();
  ASSERT_TRUE(after) << message_of(after.error());
  EXPECT_EQ(after->feed_reads, before->feed_reads)
    << after->local_waits << " wake-ups waited for the announcement";
  EXPECT_EQ(after->fed_by_reads, before->fed_by_reads);
}

// Waiting for a local announcement never holds back another process's
// commit: idle, the bus reads it at once; while the node itself commits
// without pause, the next local announcement shows what is missing, and
// the bus reads it then, not after the (here 10 s) grace.
TEST_F(Bus, AnotherEnginesCommitsAreNotHeldBehindLocalOnes) {
  auto& other = start(fast());
  auto ec = fast();
  ec.bus.poll = 60s;
  ec.bus.local_grace = 10s;
  other_node second{ec};
  auto& node = second.eng;
  ASSERT_TRUE(node.append({make("B", {})}));
  ASSERT_EQ(bus_head_at_least(node, 1), 1u);
  auto& c = fresh();
  auto sub = follow(node, types({"A"}), 0, c);
  ASSERT_TRUE(c.wait_kind(bus_item_kind::caught_up));
  std::size_t want = 0;
  auto deliver = [&] {
    ASSERT_TRUE(other.append({make("A", {})}));
    // Well below the grace: the wait did not hold it back.
    ASSERT_TRUE(c.wait_events(++want, 3s)) << "event " << want;
  };
  for (int i = 0; i < 5; ++i)
    deliver();
  std::atomic<bool> stop{false};
  std::atomic<int> local{0};
  std::thread busy{[&] {
    while (!stop.load()) {
      if (node.append({make("B", {})}))
        ++local;
    }
  }};
  for (int i = 0; i < 30; ++i)
    deliver();
  stop = true;
  busy.join();
  EXPECT_GT(local.load(), 0);
  check_stream(node, types({"A"}), 0, c.items());
  auto stats = node.bus_stats();
  ASSERT_TRUE(stats);
  // Its commits came by reads (a read may also bring local ones early).
  EXPECT_GE(stats->fed_by_reads, want);
}

TEST_F(Bus, WithoutListenPollingStillDelivers) {
  auto& writer = start(fast());
  auto ec = fast();
  ec.listen = false;
  ec.bus.poll = 200ms;
  other_node second{ec};
  auto& reader = second.eng;
  EXPECT_EQ(reader.listener_pid(), 0);
  auto& c = fresh();
  auto sub = follow(reader, types({"A"}), 0, c);
  // Live first, so what follows can only come from polling.
  ASSERT_TRUE(c.wait_kind(bus_item_kind::caught_up));
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(writer.append({make(i % 2 ? "A" : "B", {})}));
  ASSERT_TRUE(c.wait_events(10, 5s));
  check_stream(reader, types({"A"}), 0, c.items());
  auto stats = reader.bus_stats();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->fed_by_reads, 20u);
}

/// Subscribes `into` to `bus` directly (without an engine).
void sink_into(caf::actor_system& sys, bus_actor bus, subscribe_request req,
               collector& into) {
  spawn_subscription_sink(
    sys, std::move(bus), std::move(req),
    [&into](std::vector<bus_item>& xs, std::function<void(bool)> ack) {
      into.add(xs);
      ack(true);
    },
    [&into](const bus_end& e) {
      into.finish(e);
    },
    nullptr);
}

TEST(MemoryBus, FollowsAnInMemoryStore) {
  caf::actor_system_config cfg;
  configure_test_system(cfg);
  caf::actor_system sys{cfg};
  collector c; // outlives the engine
  auto mem = std::make_shared<memory_event_store>();
  engine_config ec;
  ec.readers = 2;
  ec.store_factory = [mem](std::size_t) {
    return mem;
  };
  engine eng{sys, ec};
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE(eng.append({make(i % 2 ? "A" : "B", {})}));
  auto sub = follow(eng, types({"A"}), 10, c);
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE(eng.append({make(i % 2 ? "A" : "B", {})}));
  ASSERT_TRUE(c.wait_events(25));
  check_stream(eng, types({"A"}), 10, c.items());
}

// A subscription from the head of the log while the node's event cache is
// behind it (commits not fed to it yet): the snapshot read for the first
// event's prev is served at the cache's head, below `after`, which must not
// make the bus refuse `after` as past the head of the log.
TEST(MemoryBus, AfterPastTheCacheHeadIsNotPastTheLogHead) {
  collector c; // outlives the actors
  caf::actor_system_config cfg;
  configure_test_system(cfg);
  caf::actor_system sys{cfg};
  auto mem = std::make_shared<memory_event_store>();
  for (int i = 0; i < 5; ++i)
    mem->append({make("A", {})});
  // The cache holds (0, 3]; 4 and 5 are committed, not fed to it.
  auto cache = std::make_shared<event_cache>(std::size_t{1} << 20);
  cache->start(0);
  auto first = mem->read(query::all(), read_options{});
  first.events.resize(3);
  ASSERT_TRUE(cache->extend(first.events));
  auto cached = std::make_shared<cached_event_store>(mem, cache,
                                                     make_read_index(mem));
  auto readers = spawn_reader(sys, cached, reader_config{});
  auto store = spawn_store(sys, cached, group_limits{});
  bus_config bc;
  bc.tick = 20ms;
  auto bus = spawn_bus(sys, store, readers, bc);
  auto subscribe = [&](std::uint64_t after, collector& into) {
    subscribe_request req;
    req.q = query::all();
    req.after = after;
    sink_into(sys, bus, std::move(req), into);
  };
  subscribe(5, c);
  EXPECT_TRUE(c.wait_kind(bus_item_kind::caught_up));
  EXPECT_FALSE(c.end().has_value()) << c.end()->message;
  EXPECT_TRUE(c.events().empty());
  // Past the head of the log (the database's) is still refused.
  collector past;
  subscribe(6, past);
  EXPECT_TRUE(past.wait_end());
  EXPECT_EQ(past.end()->code, errc::invalid_argument);
  for (auto h :
       {caf::actor_cast<caf::actor>(bus), caf::actor_cast<caf::actor>(store),
        caf::actor_cast<caf::actor>(readers)})
    stop_actor(sys, h);
  EXPECT_TRUE(c.wait_end());
}

/// The in-memory store, except that its head is unavailable until `up`.
class head_down_store : public event_store {
public:
  explicit head_down_store(std::shared_ptr<event_store> inner)
    : inner_(std::move(inner)) {
    // nop
  }

  std::atomic<bool> up{false};

  std::vector<append_result>
  append_validated(const std::vector<validated_append>& group) override {
    return inner_->append_validated(group);
  }

  read_result read(const query& q, const read_options& options) override {
    return inner_->read(q, options);
  }

  std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options,
         const stream_options& chunking) override {
    return inner_->stream(q, options, chunking);
  }

  std::uint64_t head() override {
    if (!up.load())
      throw store_error(errc::unavailable, "the head is down (test)");
    return inner_->head();
  }

private:
  std::shared_ptr<event_store> inner_;
};

// While the bus cannot learn the head (the database is down at start), a
// subscription gets no heartbeat: a heartbeat carries the head, and 0 would
// be a lie. Once the head is known, heartbeats carry it.
TEST(MemoryBus, NoHeartbeatBeforeTheBusKnowsTheHead) {
  collector c; // outlives the actors
  caf::actor_system_config cfg;
  configure_test_system(cfg);
  caf::actor_system sys{cfg};
  auto mem = std::make_shared<memory_event_store>();
  for (int i = 0; i < 5; ++i)
    mem->append({make("A", {})});
  auto gated = std::make_shared<head_down_store>(mem);
  auto readers = spawn_reader(sys, gated, reader_config{});
  auto store = spawn_store(sys, gated, group_limits{});
  bus_config bc;
  bc.tick = 20ms;
  auto bus = spawn_bus(sys, store, readers, bc);
  subscribe_request req;
  req.q = query::all();
  req.after = 0;
  req.heartbeat = 50ms;
  sink_into(sys, bus, std::move(req), c);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(c.count(bus_item_kind::heartbeat), 0u);
  EXPECT_EQ(c.count(bus_item_kind::caught_up), 0u);
  gated->up = true;
  EXPECT_TRUE(c.wait_kind(bus_item_kind::caught_up, 5s));
  EXPECT_TRUE(c.wait_kind(bus_item_kind::heartbeat, 5s));
  EXPECT_EQ(c.events(), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  for (auto& x : c.items()) {
    if (x.kind == bus_item_kind::heartbeat) {
      EXPECT_EQ(x.head, 5u);
    }
  }
  for (auto h :
       {caf::actor_cast<caf::actor>(bus), caf::actor_cast<caf::actor>(store),
        caf::actor_cast<caf::actor>(readers)})
    stop_actor(sys, h);
  EXPECT_TRUE(c.wait_end());
}

} // namespace
} // namespace dcbd::test
