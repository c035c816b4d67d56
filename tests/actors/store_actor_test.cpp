// The store actor against the real PostgreSQL: group commit and its
// limits, and listeners. Admission control, terminated connections and
// invalid input: store_actor_fault_test.cpp.
#include "tests/actors/store_actor_support.hpp"

namespace dcbd::test {
namespace {

class StoreActor : public StoreActorTest {};

TEST_F(StoreActor, GroupCommitBatchesConcurrentAppendsWithGapFreePositions) {
  auto metrics = std::make_shared<group_recorder>();
  auto store = spawn_store(*sys_, open_store(2), group_limits{}, metrics);
  auto reqs = tagged_requests(200);
  auto out = append_all(*sys_, store, reqs, 4);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    ASSERT_TRUE(out[i]) << "request " << i << ": "
                        << message_of(out[i].error());
    total += reqs[i].events.size();
  }
  EXPECT_EQ(expect_acked_stored_exactly(reqs, out), total);
  auto stats = ask<store_stats>(*sys_, store, stats_atom::value);
  ASSERT_TRUE(stats) << message_of(stats.error());
  RecordProperty("groups", std::to_string(stats->groups));
  RecordProperty("max_group", std::to_string(stats->max_group));
  EXPECT_LT(stats->groups, 200u) << "appends were not grouped";
  EXPECT_GT(stats->max_group, 1u);
  EXPECT_EQ(stats->appended, 200u);
  EXPECT_EQ(stats->events, total);
  EXPECT_EQ(stats->overloaded + stats->invalid + stats->unavailable
              + stats->internal + stats->conflicts,
            0u);
  auto groups = metrics->groups();
  EXPECT_EQ(groups.size(), stats->groups);
  std::size_t requests = 0, events = 0, largest = 0;
  for (auto [r, e] : groups) {
    requests += r;
    events += e;
    largest = std::max(largest, r);
  }
  EXPECT_EQ(requests, 200u);
  EXPECT_EQ(events, total);
  EXPECT_EQ(largest, stats->max_group);
  stop_actor(*sys_, store);
}

TEST_F(StoreActor, RequestLimitCutsGroups) {
  auto metrics = std::make_shared<group_recorder>();
  group_limits limits;
  limits.max_requests = 3;
  auto store = spawn_store(*sys_, open_store(2), limits, metrics);
  auto reqs = tagged_requests(60);
  auto out = append_all(*sys_, store, reqs, 2);
  for (std::size_t i = 0; i < out.size(); ++i)
    ASSERT_TRUE(out[i]) << "request " << i << ": "
                        << message_of(out[i].error());
  expect_acked_stored_exactly(reqs, out);
  auto stats = ask<store_stats>(*sys_, store, stats_atom::value);
  ASSERT_TRUE(stats) << message_of(stats.error());
  EXPECT_LE(stats->max_group, 3u);
  EXPECT_GT(stats->max_group, 1u) << "appends were not grouped at all";
  EXPECT_GE(stats->groups, 20u);
  for (auto [r, e] : metrics->groups())
    EXPECT_LE(r, 3u);
  stop_actor(*sys_, store);
}

TEST_F(StoreActor, EventLimitCutsGroupsAndALargeRequestGoesAlone) {
  auto metrics = std::make_shared<group_recorder>();
  group_limits limits;
  limits.max_events = 5;
  auto store = spawn_store(*sys_, open_store(2), limits, metrics);
  // 2 events each, except request 10 with 8 events (more than a group).
  std::vector<append_request> reqs;
  for (int i = 0; i < 40; ++i) {
    append_request r;
    auto n = i == 10 ? 8 : 2;
    for (int j = 0; j < n; ++j)
      r.events.push_back(make("E", {"req:" + std::to_string(i)}, "x"));
    reqs.push_back(std::move(r));
  }
  auto out = append_all(*sys_, store, reqs, 2);
  for (std::size_t i = 0; i < out.size(); ++i)
    ASSERT_TRUE(out[i]) << "request " << i << ": "
                        << message_of(out[i].error());
  expect_acked_stored_exactly(reqs, out);
  auto groups = metrics->groups();
  bool grouped = false, large_alone = false;
  for (auto [r, e] : groups) {
    if (r > 1) {
      grouped = true;
      EXPECT_LE(e, 5u) << "a group of " << r << " requests exceeds max_events";
    }
    if (e == 8)
      large_alone = r == 1;
  }
  EXPECT_TRUE(grouped) << "appends were not grouped at all";
  EXPECT_TRUE(large_alone) << "the 8-event request should be a group alone";
  stop_actor(*sys_, store);
}

TEST_F(StoreActor, ListenersReceiveExactlyTheCommittedEventsInOrder) {
  auto& eng = start();
  caf::scoped_actor listener{*sys_};
  // A second listener that dies before the appends: the store must drop it.
  auto dead = sys_->spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](committed_atom, const committed_events&) {}};
  });
  caf::anon_send(eng.store(), listen_atom::value, dead);
  // Local sends enqueue at once, so the registration precedes the appends.
  listener->send(eng.store(), listen_atom::value,
                 caf::actor_cast<caf::actor>(listener));
  stop_actor(*sys_, dead);
  dead = caf::actor{};

  // Unsorted and duplicate tags: listeners see the stored (normalized) form.
  std::vector<append_request> reqs;
  for (int i = 0; i < 30; ++i) {
    append_request r;
    for (int j = 0; j <= i % 3; ++j)
      r.events.push_back(event{"T" + std::to_string(j),
                               {"req:" + std::to_string(i), "a:x", "a:x"},
                               "data-" + std::to_string(i),
                               "meta-" + std::to_string(j)});
    reqs.push_back(std::move(r));
  }
  auto out = append_all(*sys_, eng.appenders(), reqs, 3);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    ASSERT_TRUE(out[i]) << "request " << i << ": "
                        << message_of(out[i].error());
    total += reqs[i].events.size();
  }
  // A conflicting append commits nothing and must not be announced.
  auto conflict = eng.append({make("T0", {"late"}, "no")},
                             append_condition{query::all(), 0});
  ASSERT_FALSE(conflict);
  EXPECT_EQ(code_of(conflict.error()), errc::append_condition_failed);

  std::vector<sequenced_event> seen;
  std::size_t messages = 0;
  bool timed_out = false;
  while (seen.size() < total && !timed_out) {
    listener->receive(
      [&](committed_atom, committed_events& ce) {
        ++messages;
        EXPECT_FALSE(ce.events.empty()) << "empty announcement";
        for (auto& e : ce.events)
          seen.push_back(std::move(e));
      },
      caf::after(std::chrono::seconds{10}) >>
        [&] {
          timed_out = true;
        });
  }
  ASSERT_FALSE(timed_out) << "listener got " << seen.size() << " of " << total
                          << " events";
  EXPECT_GE(messages, 1u);
  // Nothing more arrives (the conflict announced nothing).
  bool extra = false;
  listener->receive(
    [&](committed_atom, committed_events&) {
      extra = true;
    },
    caf::after(std::chrono::milliseconds{300}) >> [] {});
  EXPECT_FALSE(extra) << "an announcement beyond the committed events";

  auto stored = eng.read(query::all());
  ASSERT_TRUE(stored) << message_of(stored.error());
  ASSERT_EQ(stored->events.size(), total);
  ASSERT_EQ(seen.size(), total);
  for (std::size_t i = 0; i < total; ++i) {
    EXPECT_EQ(seen[i].position, i + 1) << "announcements out of order";
    EXPECT_EQ(seen[i].event.type, stored->events[i].event.type);
    EXPECT_EQ(seen[i].event.tags, stored->events[i].event.tags);
    EXPECT_EQ(seen[i].event.data, stored->events[i].event.data);
    EXPECT_EQ(seen[i].event.metadata, stored->events[i].event.metadata);
  }
  // The store is still alive and still announcing.
  auto more = eng.append({make("After", {"k:1"}, "z")});
  ASSERT_TRUE(more) << message_of(more.error());
  bool announced = false;
  listener->receive(
    [&](committed_atom, committed_events& ce) {
      announced = ce.events.size() == 1
                  && ce.events[0].position == more->last_position
                  && ce.events[0].event.type == "After";
    },
    caf::after(std::chrono::seconds{10}) >> [] {});
  EXPECT_TRUE(announced);
}

// Validation gives the events their stored form before the store actor sees
// them; the announcement must carry the events as stored.
TEST_F(StoreActor, ListenersSeeTheStoredFormOfDirectAppends) {
  auto store = spawn_store(*sys_, open_store(2), group_limits{});
  caf::scoped_actor listener{*sys_};
  listener->send(store, listen_atom::value,
                 caf::actor_cast<caf::actor>(listener));
  auto ack = ask<append_ack>(
    *sys_, store, append_atom::value,
    validate_append(append_request{{make("E", {"z:1", "a:1", "z:1"}, "d")},
                                   std::nullopt},
                    limits{}));
  ASSERT_TRUE(ack) << message_of(ack.error());
  auto stored = open_store(1)->read(query::all());
  ASSERT_EQ(stored.events.size(), 1u);
  EXPECT_EQ(stored.events[0].event.tags,
            (std::vector<std::string>{"a:1", "z:1"}));
  std::vector<sequenced_event> seen;
  listener->receive(
    [&](committed_atom, committed_events& ce) {
      seen = std::move(ce.events);
    },
    caf::after(std::chrono::seconds{10}) >> [] {});
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].position, 1u);
  EXPECT_EQ(seen[0].event.type, stored.events[0].event.type);
  EXPECT_EQ(seen[0].event.tags, stored.events[0].event.tags)
    << "the announcement carries the tags as sent, not as stored";
  EXPECT_EQ(seen[0].event.data, stored.events[0].event.data);
  stop_actor(*sys_, store);
}

} // namespace
} // namespace dcbd::test
