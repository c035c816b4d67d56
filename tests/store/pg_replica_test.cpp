// Reads from a real streaming standby (store/pg_replica): linearizable
// whatever the standby does, served by it when it has replayed what a read
// must see, and never failed by it when it lags, stops or breaks.
#include "store/pg_replica.hpp"

#include "store/cached_store.hpp"
#include "tests/support/replica_fixture.hpp"

#include <gtest/gtest.h>

#include <iostream>
#include <thread>

namespace dcbd::test {
namespace {

using namespace std::chrono_literals;

std::size_t at(replica_route r) {
  return static_cast<std::size_t>(r);
}

event make(std::string type, std::vector<std::string> tags,
           std::string data = "d") {
  return event{std::move(type), std::move(tags), std::move(data), "m"};
}

query tagged(std::string tag) {
  return query{{query_item{{}, {std::move(tag)}}}};
}

std::vector<std::uint64_t> positions(const std::vector<sequenced_event>& es) {
  std::vector<std::uint64_t> out;
  for (auto& e : es)
    out.push_back(e.position);
  return out;
}

// Everything a stream hands out, chunk by chunk.
read_result drain(event_store& s, const query& q, const read_options& o,
                  std::size_t chunk_events) {
  stream_options c;
  c.chunk_events = chunk_events;
  auto st = s.stream(q, o, c);
  read_result out;
  for (std::vector<sequenced_event> chunk; st->next(chunk);)
    out.events.insert(out.events.end(), chunk.begin(), chunk.end());
  out.head = st->head();
  return out;
}

class ReplicaStore : public ReplicaTest {
protected:
  // A primary store on this test's schema, the standby (`rc`), a read
  // index over the primary and the replica store reading through them.
  void open(replica_config rc) {
    primary_ = std::shared_ptr<pg_event_store>(open_store());
    standby_ = std::make_shared<standby>(std::move(rc), schema_);
    replica_ = std::make_unique<replica_event_store>(
      primary_, standby_, make_read_index(primary_), 2);
  }

  void open() {
    open(replica());
  }

  std::uint64_t by_replica() const {
    return standby_->stats().by_replica();
  }

  std::uint64_t by_primary() const {
    return standby_->stats().by_primary();
  }

  std::shared_ptr<pg_event_store> primary_;
  std::shared_ptr<standby> standby_;
  std::unique_ptr<replica_event_store> replica_;
};

TEST_F(ReplicaStore, EveryReadRightAfterAnAppendSeesIt) {
  open();
  for (int i = 0; i < 300; ++i) {
    auto tag = "k:" + std::to_string(i);
    auto pos = primary_->append({make("E", {tag})});
    // A read that starts after the acknowledgement, by tag and by the
    // position range.
    auto r = replica_->read(tagged(tag));
    ASSERT_EQ(r.events.size(), 1u) << "round " << i;
    EXPECT_EQ(r.events[0].position, pos);
    EXPECT_GE(r.head, pos);
    read_options from;
    from.from = pos;
    auto tail = replica_->read(query::all(), from);
    ASSERT_FALSE(tail.events.empty()) << "round " << i;
    EXPECT_EQ(tail.events.front().position, pos);
  }
  auto s = standby_->stats();
  std::cout << "[          ] by the standby " << s.by_replica() << " (at once "
            << s.reads[at(replica_route::replica_caught_up)] << "), by the "
            << "primary " << s.by_primary() << ", looks " << s.polls << "\n";
  // The standby answered some of them (it replays in well under the wait on
  // loopback); whatever it answered or not, every read saw its append.
  EXPECT_GT(s.by_replica(), 0u);
  EXPECT_EQ(s.by_replica() + s.by_primary(), 600u);
  EXPECT_EQ(s.reads[at(replica_route::primary_failed)], 0u);
  EXPECT_EQ(s.reads[at(replica_route::primary_down)], 0u);
}

TEST_F(ReplicaStore, ACaughtUpStandbyServesReadsStreamsAndTheirHeads) {
  open();
  std::vector<event> events;
  for (int i = 0; i < 40; ++i)
    events.push_back(make(i % 3 == 0 ? "A" : "B",
                          {"n:" + std::to_string(i % 5), "all"},
                          std::string(static_cast<std::size_t>(i) * 7, 'x')));
  primary_->append(events);
  ASSERT_TRUE(standby_caught_up());
  struct read_case {
    query q;
    read_options o;
  };
  auto opts = [](std::optional<std::uint64_t> from,
                 std::optional<std::uint64_t> limit, bool backwards,
                 std::optional<std::uint64_t> until = std::nullopt) {
    read_options o;
    o.from = from;
    o.limit = limit;
    o.backwards = backwards;
    o.until = until;
    return o;
  };
  std::vector<read_case> cases{
    {query::all(), {}},
    {query::all(), opts(10, 7, false)},
    {query::all(), opts(30, std::nullopt, true)},
    {query::all(), opts(std::nullopt, 5, true)},
    {query::all(), opts(3, std::nullopt, false, 12)},
    {query{{query_item{{"A"}, {}}}}, {}},
    {tagged("n:2"), opts(std::nullopt, 3, true)},
    {query{{query_item{{"B"}, {"n:1"}}, query_item{{"A"}, {"n:4"}}}},
     opts(5, std::nullopt, false)},
    {tagged("nothing"), {}},
  };
  auto before = by_replica();
  for (std::size_t k = 0; k < cases.size(); ++k) {
    auto& c = cases[k];
    auto want = primary_->read(c.q, c.o);
    auto got = replica_->read(c.q, c.o);
    EXPECT_EQ(positions(got.events), positions(want.events)) << "case " << k;
    EXPECT_EQ(got.head, want.head) << "case " << k;
    ASSERT_EQ(got.events.size(), want.events.size());
    for (std::size_t i = 0; i < got.events.size(); ++i) {
      EXPECT_EQ(got.events[i].event.data, want.events[i].event.data);
      EXPECT_EQ(got.events[i].event.tags, want.events[i].event.tags);
      EXPECT_EQ(got.events[i].recorded_at, want.events[i].recorded_at);
    }
    auto streamed = drain(*replica_, c.q, c.o, 3);
    EXPECT_EQ(positions(streamed.events), positions(want.events))
      << "case " << k;
    EXPECT_EQ(streamed.head, want.head) << "case " << k;
  }
  // Every one of them, read and stream, was the standby's.
  EXPECT_EQ(by_replica() - before, 2 * cases.size());
  EXPECT_EQ(by_primary(), 0u);
  EXPECT_EQ(standby_->stats().lag, 0u);
  // The head comes from the primary; appends go there too.
  EXPECT_EQ(replica_->head(), 40u);
  EXPECT_EQ(replica_->append({make("A", {"n:9"})}), 41u);
  EXPECT_EQ(primary_->read(tagged("n:9")).events.size(), 1u);
}

TEST_F(ReplicaStore, AnswersAtTheHeadTheReadMustSeeNotBeyond) {
  open();
  for (int i = 0; i < 10; ++i)
    primary_->append({make("E", {"k"})});
  ASSERT_TRUE(standby_caught_up());
  // The standby has replayed 10; a read that must see 6 answers as the log
  // was at 6, forward, backwards and streamed.
  read_scope scope{cache_route::read, read_consistency::linearizable, 6};
  auto r = replica_->read(query::all());
  EXPECT_EQ(positions(r.events),
            (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r.head, 6u);
  read_options back;
  back.backwards = true;
  back.limit = 2;
  auto b = replica_->read(query::all(), back);
  EXPECT_EQ(positions(b.events), (std::vector<std::uint64_t>{6, 5}));
  EXPECT_EQ(b.head, 6u);
  auto s = drain(*replica_, tagged("k"), {}, 4);
  EXPECT_EQ(s.events.size(), 6u);
  EXPECT_EQ(s.head, 6u);
  EXPECT_EQ(by_replica(), 3u);
  EXPECT_EQ(by_primary(), 0u);
}

TEST_F(ReplicaStore, InvalidInputIsRejectedBeforeAnyStandbyIsAsked) {
  open();
  query bad{{query_item{}}};
  try {
    replica_->read(bad);
    FAIL() << "an item with neither types nor tags was accepted";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument);
    EXPECT_NE(std::string{e.what()}.find("query"), std::string::npos)
      << e.what();
  }
  EXPECT_THROW(replica_->stream(bad), store_error);
  EXPECT_EQ(by_replica() + by_primary(), 0u);
}

TEST_F(ReplicaStore, AStandbyOnAClosedPortNeverFailsAReadAndBacksOff) {
  auto rc = replica();
  rc.dsn = "host=127.0.0.1 port=" + std::to_string(closed_port())
           + " user=postgres dbname=postgres";
  // Long enough that no read of this test tries it again.
  rc.backoff_min = rc.backoff_max = std::chrono::minutes{10};
  open(rc);
  for (int i = 0; i < 20; ++i) {
    auto pos = primary_->append({make("E", {"k:" + std::to_string(i)})});
    auto r = replica_->read(tagged("k:" + std::to_string(i)));
    ASSERT_EQ(r.events.size(), 1u);
    EXPECT_EQ(r.events[0].position, pos);
    auto s = drain(*replica_, query::all(), {}, 5);
    EXPECT_EQ(s.events.size(), static_cast<std::size_t>(i + 1));
    EXPECT_EQ(s.head, pos);
  }
  auto s = standby_->stats();
  EXPECT_EQ(s.by_replica(), 0u);
  // The first read found it down; the others, during its backoff, did not
  // try it.
  EXPECT_EQ(s.reads[at(replica_route::primary_failed)], 1u);
  EXPECT_EQ(s.reads[at(replica_route::primary_down)], 39u);
  EXPECT_EQ(s.by_primary(), 40u);
  EXPECT_EQ(s.failures, 1u);
  EXPECT_FALSE(s.up);
}

TEST_F(ReplicaStore,
       PausedReplayMakesReadsBeyondItGoToThePrimaryUntilItResumes) {
  open();
  auto first = primary_->append({make("E", {"k:0"})});
  ASSERT_TRUE(standby_caught_up());
  ASSERT_TRUE(pause_replay());
  // Below what it replayed, the standby still serves.
  {
    read_scope scope{cache_route::read, read_consistency::linearizable, first};
    auto r = replica_->read(tagged("k:0"));
    ASSERT_EQ(r.events.size(), 1u);
    EXPECT_EQ(r.head, first);
  }
  EXPECT_EQ(by_replica(), 1u);
  // Past it, reads go to the primary after the wait, and see every append.
  std::uint64_t last = 0;
  for (int i = 1; i <= 5; ++i) {
    last = primary_->append({make("E", {"k:" + std::to_string(i)})});
    auto r = replica_->read(tagged("k:" + std::to_string(i)));
    ASSERT_EQ(r.events.size(), 1u) << "round " << i;
    EXPECT_EQ(r.events[0].position, last);
    auto all = drain(*replica_, query::all(), {}, 2);
    EXPECT_EQ(all.events.size(), static_cast<std::size_t>(i + 1));
    EXPECT_GE(all.head, last);
  }
  auto s = standby_->stats();
  EXPECT_EQ(s.by_replica(), 1u);
  EXPECT_EQ(s.reads[at(replica_route::primary_lagging)], 10u);
  EXPECT_EQ(s.by_primary(), 10u);
  EXPECT_GE(s.lag, 1u);
  EXPECT_EQ(s.replayed, first);
  EXPECT_TRUE(s.up);
  // Replay resumes: the standby catches up and serves again.
  resume_replay();
  ASSERT_TRUE(standby_caught_up());
  auto r = replica_->read(query::all());
  EXPECT_EQ(r.events.size(), 6u);
  EXPECT_EQ(r.head, last);
  auto after = standby_->stats();
  EXPECT_EQ(after.by_replica(), 2u);
  EXPECT_EQ(after.lag, 0u);
  EXPECT_EQ(after.replayed, last);
}

TEST_F(ReplicaStore, AStreamWhoseStandbyConnectionDiesFinishesOnThePrimary) {
  open();
  std::vector<event> events;
  for (int i = 0; i < 30; ++i)
    events.push_back(make("E", {"k"}));
  primary_->append(events);
  ASSERT_TRUE(standby_caught_up());
  for (bool backwards : {false, true}) {
    read_options o;
    o.backwards = backwards;
    o.limit = 25;
    auto want = primary_->read(query::all(), o);
    stream_options c;
    c.chunk_events = 4;
    auto before = standby_->stats();
    auto st = replica_->stream(query::all(), o, c);
    EXPECT_EQ(standby_->stats().by_replica(), before.by_replica() + 1);
    std::vector<sequenced_event> got, chunk;
    ASSERT_TRUE(st->next(chunk));
    got.insert(got.end(), chunk.begin(), chunk.end());
    // Every client connection of the standby goes: the next page fails
    // there and the stream carries on from the primary.
    exec_standby_sql("SELECT count(pg_terminate_backend(pid)) FROM "
                     "pg_stat_activity WHERE backend_type = 'client backend' "
                     "AND pid <> pg_backend_pid()");
    while (st->next(chunk))
      got.insert(got.end(), chunk.begin(), chunk.end());
    EXPECT_EQ(positions(got), positions(want.events))
      << (backwards ? "backwards" : "forward");
    EXPECT_EQ(st->head(), want.head);
    auto after = standby_->stats();
    EXPECT_EQ(after.reads[at(replica_route::primary_failed)],
              before.reads[at(replica_route::primary_failed)] + 1);
    // The standby is tried again after its backoff and serves again.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    auto served = after.by_replica();
    while (standby_->stats().by_replica() == served
           && std::chrono::steady_clock::now() < deadline) {
      EXPECT_EQ(replica_->read(query::all()).events.size(), 30u);
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_GT(standby_->stats().by_replica(), served);
    EXPECT_TRUE(standby_->stats().up);
  }
}

TEST_F(ReplicaStore, AStoppedStandbyNeverFailsAReadAndIsUsedAgainOnceBack) {
  if (!have_standby_ctl()) {
    if (under_ci())
      FAIL() << "DCBD_TEST_DEV is not set: this test stops the standby "
                "through ./dev";
    GTEST_SKIP() << "DCBD_TEST_DEV is not set (./dev test sets it)";
  }
  open();
  primary_->append({make("E", {"k:0"})});
  ASSERT_TRUE(standby_caught_up());
  EXPECT_EQ(replica_->read(tagged("k:0")).events.size(), 1u);
  EXPECT_EQ(by_replica(), 1u);
  ASSERT_TRUE(standby_ctl("stop"));
  for (int i = 1; i <= 10; ++i) {
    auto pos = primary_->append({make("E", {"k:" + std::to_string(i)})});
    auto r = replica_->read(tagged("k:" + std::to_string(i)));
    ASSERT_EQ(r.events.size(), 1u) << "round " << i;
    EXPECT_EQ(r.events[0].position, pos);
    std::this_thread::sleep_for(10ms);
  }
  auto down = standby_->stats();
  EXPECT_EQ(down.by_replica(), 1u);
  EXPECT_EQ(down.by_primary(), 10u);
  EXPECT_GE(down.reads[at(replica_route::primary_failed)], 1u);
  EXPECT_FALSE(down.up);
  ASSERT_TRUE(standby_ctl("start"));
  ASSERT_TRUE(standby_caught_up());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (standby_->stats().by_replica() == 1u
         && std::chrono::steady_clock::now() < deadline) {
    EXPECT_EQ(replica_->read(query::all()).events.size(), 11u);
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GT(standby_->stats().by_replica(), 1u);
  EXPECT_TRUE(standby_->stats().up);
}

TEST_F(ReplicaStore, ConcurrentReadersSeeEveryAppendAcknowledgedBeforeThem) {
  open();
  constexpr int threads = 4;
  constexpr int rounds = 150;
  std::atomic<int> missed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      // Each thread has a replica store of its own over the shared standby,
      // as each reader actor does.
      replica_event_store mine{primary_, standby_, make_read_index(primary_),
                               1};
      for (int i = 0; i < rounds; ++i) {
        auto tag = "t" + std::to_string(t) + ":" + std::to_string(i);
        auto pos = primary_->append({make("E", {tag})});
        auto r = mine.read(tagged(tag));
        if (r.events.size() != 1 || r.events[0].position != pos || r.head < pos)
          ++missed;
      }
    });
  for (auto& t : ts)
    t.join();
  EXPECT_EQ(missed.load(), 0);
  auto s = standby_->stats();
  EXPECT_EQ(s.by_replica() + s.by_primary(),
            static_cast<std::uint64_t>(threads * rounds));
  EXPECT_GT(s.by_replica(), 0u);
}

TEST(ReplicaDsn, ConnectTimeoutIsAddedUnlessSet) {
  EXPECT_EQ(with_connect_timeout("host=h port=1", 2),
            "host=h port=1 connect_timeout=2");
  EXPECT_EQ(with_connect_timeout("host=h connect_timeout=9", 2),
            "host=h connect_timeout=9");
  EXPECT_EQ(with_connect_timeout("postgresql://u@h:5/db", 3),
            "postgresql://u@h:5/db?connect_timeout=3");
  EXPECT_EQ(with_connect_timeout("postgres://h/db?sslmode=disable", 3),
            "postgres://h/db?sslmode=disable&connect_timeout=3");
  EXPECT_EQ(with_connect_timeout("", 2), "connect_timeout=2");
}

} // namespace
} // namespace dcbd::test
