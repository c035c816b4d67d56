// The store actor against the real PostgreSQL: group commit and its limits,
// listeners, admission control, terminated connections and invalid input.
#include "tests/support/engine_fixture.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

namespace dcbd::test {
namespace {

using append_outcome = caf::expected<append_ack>;

// Records the size of every group the store actor commits.
class group_recorder : public store_metrics {
public:
  void group_committed(std::size_t requests, std::size_t events,
                       std::chrono::nanoseconds) override {
    std::lock_guard guard{mtx_};
    groups_.emplace_back(requests, events);
  }

  /// (requests, events) per committed group, in commit order.
  std::vector<std::pair<std::size_t, std::size_t>> groups() const {
    std::lock_guard guard{mtx_};
    return groups_;
  }

private:
  mutable std::mutex mtx_;
  std::vector<std::pair<std::size_t, std::size_t>> groups_;
};

// What a request travels as: the store actor takes validated appends only
// (validation happens before it, in the appenders), the appenders take
// requests.
template <class Handle>
auto as_message(const append_request& req) {
  if constexpr (std::is_same_v<Handle, store_actor>)
    return validate_append(req, limits{});
  else
    return req;
}

// Sends every request at once, request i from sender i % senders (each an
// event-based actor that fires its share without waiting), and returns the
// replies in request order.
template <class Handle>
std::vector<append_outcome>
append_all(caf::actor_system& sys, const Handle& dest,
           const std::vector<append_request>& reqs, std::size_t senders) {
  struct replies {
    std::mutex mtx;
    std::vector<append_outcome> results;
    std::size_t pending = 0;
    std::promise<void> done;
    void set(std::size_t i, append_outcome r) {
      std::lock_guard guard{mtx};
      results[i] = std::move(r);
      if (--pending == 0)
        done.set_value();
    }
  };
  auto st = std::make_shared<replies>();
  st->results.assign(reqs.size(),
                     append_outcome{caf::make_error(errc::internal, "none")});
  st->pending = reqs.size();
  auto finished = st->done.get_future();
  if (reqs.empty())
    return {};
  for (std::size_t s = 0; s < senders; ++s) {
    std::vector<std::pair<std::size_t, append_request>> mine;
    for (auto i = s; i < reqs.size(); i += senders)
      mine.emplace_back(i, reqs[i]);
    sys.spawn([st, dest, mine](caf::event_based_actor* self) {
      for (const auto& item : mine) {
        auto i = item.first;
        self
          ->request(dest, std::chrono::seconds{60}, append_atom::value,
                    as_message<Handle>(item.second))
          .then(
            [st, i](append_ack& ack) {
              st->set(i, ack);
            },
            [st, i](caf::error& err) {
              st->set(i, std::move(err));
            });
      }
    });
  }
  finished.wait();
  std::lock_guard guard{st->mtx};
  return std::move(st->results);
}

event make(std::string type, std::vector<std::string> tags, std::string data) {
  return event{std::move(type), std::move(tags), std::move(data), {}};
}

// Request i: 1 + i % 3 events, all tagged "req:i".
std::vector<append_request> tagged_requests(std::size_t n) {
  std::vector<append_request> reqs;
  for (std::size_t i = 0; i < n; ++i) {
    append_request r;
    for (std::size_t j = 0; j <= i % 3; ++j)
      r.events.push_back(
        make("T" + std::to_string(i % 5),
             {"n:" + std::to_string(j), "req:" + std::to_string(i)},
             "d-" + std::to_string(i) + "-" + std::to_string(j)));
    reqs.push_back(std::move(r));
  }
  return reqs;
}

std::vector<std::string> sorted(std::vector<std::string> xs) {
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  return xs;
}

class StoreActor : public EngineTest {
protected:
  std::uint64_t count_events() {
    return std::stoull(
      exec_sql("SELECT count(*) FROM \"" + schema_ + "\".events"));
  }

  // Checks that the acknowledged requests hold exactly the positions
  // 1..total, each read back equal to what was sent, and that nothing else
  // is stored. Returns the number of acknowledged events.
  std::uint64_t
  expect_acked_stored_exactly(const std::vector<append_request>& reqs,
                              const std::vector<append_outcome>& out) {
    std::map<std::uint64_t, std::pair<std::size_t, std::size_t>> by_position;
    std::uint64_t acked_events = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      if (!out[i])
        continue;
      EXPECT_EQ(out[i]->last_position - out[i]->first_position + 1,
                reqs[i].events.size())
        << "request " << i;
      for (std::size_t j = 0; j < reqs[i].events.size(); ++j) {
        auto inserted = by_position
                          .emplace(out[i]->first_position + j,
                                   std::make_pair(i, j))
                          .second;
        EXPECT_TRUE(inserted)
          << "position " << out[i]->first_position + j << " acknowledged twice";
      }
      acked_events += reqs[i].events.size();
    }
    EXPECT_EQ(count_events(), acked_events);
    auto all = open_store(1)->read(query::all());
    EXPECT_EQ(all.events.size(), acked_events);
    std::uint64_t expected_position = 1;
    for (auto& [pos, where] : by_position) {
      EXPECT_EQ(pos, expected_position++) << "positions must be gap-free";
      if (pos > all.events.size()) {
        ADD_FAILURE() << "acknowledged position " << pos << " is not stored";
        continue;
      }
      const auto& got = all.events[pos - 1];
      const auto& sent = reqs[where.first].events[where.second];
      EXPECT_EQ(got.position, pos);
      EXPECT_EQ(got.event.type, sent.type);
      EXPECT_EQ(got.event.tags, sorted(sent.tags));
      EXPECT_EQ(got.event.data, sent.data);
      EXPECT_EQ(got.event.metadata, sent.metadata);
    }
    return acked_events;
  }
};

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

TEST_F(StoreActor, OverloadedAppendsFailFastAndStoreNothing) {
  auto cfg = config();
  cfg.group.max_queue = 4;
  auto& eng = start(cfg);
  constexpr std::size_t n = 300;
  std::vector<append_request> reqs;
  for (std::size_t i = 0; i < n; ++i)
    reqs.push_back(append_request{
      {make("E", {"req:" + std::to_string(i)}, std::to_string(i)),
       make("F", {"req:" + std::to_string(i)}, std::to_string(i))},
      std::nullopt});
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::optional<append_outcome>> out(n);
  std::size_t replies = 0;
  for (std::size_t i = 0; i < n; ++i)
    eng.append(reqs[i].events, std::nullopt, [&, i](append_outcome r) {
      std::lock_guard guard{mtx};
      out[i] = std::move(r);
      ++replies;
      cv.notify_all();
    });
  {
    std::unique_lock guard{mtx};
    ASSERT_TRUE(cv.wait_for(guard, std::chrono::seconds{60}, [&] {
      return replies == n;
    }));
  }
  std::vector<append_outcome> results;
  std::size_t ok = 0, overloaded = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto& r = *out[i];
    if (r) {
      ++ok;
    } else {
      EXPECT_EQ(code_of(r.error()), errc::overloaded)
        << "request " << i << ": " << message_of(r.error());
      if (code_of(r.error()) == errc::overloaded)
        ++overloaded;
    }
    results.push_back(std::move(r));
  }
  EXPECT_GT(ok, 0u);
  RecordProperty("acked", std::to_string(ok));
  RecordProperty("overloaded", std::to_string(overloaded));
  EXPECT_GT(overloaded, 0u) << "a queue of 4 should have refused some of " << n
                            << " concurrent appends";
  EXPECT_EQ(expect_acked_stored_exactly(reqs, results), 2 * ok);
  // Nothing is left admitted, and the store still takes appends.
  EXPECT_EQ(eng.gate()->depth(), 0u);
  auto after = eng.append({make("After", {"k:1"}, "z")});
  ASSERT_TRUE(after) << message_of(after.error());
  EXPECT_EQ(after->last_position, 2 * ok + 1);
}

TEST_F(StoreActor, DirectSendsAreBoundedByTheStoreMailbox) {
  group_limits limits;
  limits.max_queue = 4;
  auto store = spawn_store(*sys_, open_store(2), limits);
  auto reqs = tagged_requests(300);
  // One sender fires everything: far more than 4 wait in the mailbox while
  // the first group commits.
  auto out = append_all(*sys_, store, reqs, 1);
  std::size_t ok = 0, overloaded = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i]) {
      ++ok;
      continue;
    }
    EXPECT_EQ(code_of(out[i].error()), errc::overloaded)
      << "request " << i << ": " << message_of(out[i].error());
    if (code_of(out[i].error()) == errc::overloaded)
      ++overloaded;
  }
  RecordProperty("acked", std::to_string(ok));
  RecordProperty("overloaded", std::to_string(overloaded));
  EXPECT_GT(ok, 0u);
  EXPECT_GT(overloaded, 0u);
  expect_acked_stored_exactly(reqs, out);
  auto stats = ask<store_stats>(*sys_, store, stats_atom::value);
  ASSERT_TRUE(stats) << message_of(stats.error());
  EXPECT_EQ(stats->overloaded, overloaded);
  EXPECT_EQ(stats->appended, ok);
  stop_actor(*sys_, store);
}

TEST_F(StoreActor, RecoversFromTerminatedConnectionsWithoutLosingAcks) {
  auto& eng = start();
  struct outcome {
    std::string tag;
    append_outcome result;
  };
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<outcome> outcomes;
  std::size_t in_flight = 0;
  std::atomic<bool> stop{false};
  // Keeps up to 16 appends of 2 events in flight until told to stop.
  std::thread writer{[&] {
    for (int k = 0; !stop; ++k) {
      {
        std::unique_lock guard{mtx};
        cv.wait(guard, [&] {
          return in_flight < 16;
        });
        ++in_flight;
      }
      auto tag = "req:" + std::to_string(k);
      eng.append({make("E", {tag}, "a"), make("E", {tag}, "b")}, std::nullopt,
                 [&, tag](append_outcome r) {
                   std::lock_guard guard{mtx};
                   outcomes.push_back({tag, std::move(r)});
                   --in_flight;
                   cv.notify_all();
                 });
    }
  }};
  int kills = 0;
  for (int i = 0; i < 25; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds{40});
    auto n = exec_sql("SELECT count(pg_terminate_backend(pid)) FROM "
                      "pg_stat_activity WHERE pid <> pg_backend_pid() AND "
                      "query LIKE '%\""
                      + schema_ + "\"%'");
    kills += n.empty() ? 0 : std::stoi(n);
  }
  stop = true;
  writer.join();
  {
    std::unique_lock guard{mtx};
    ASSERT_TRUE(cv.wait_for(guard, std::chrono::seconds{60}, [&] {
      return in_flight == 0;
    }));
  }
  ASSERT_GT(kills, 0);
  // It recovers by itself: after at most a few failures on connections that
  // were killed while idle, appends succeed again.
  int failures = 0;
  std::vector<std::pair<std::string, append_ack>> recovered;
  for (int k = 0; recovered.size() < 5 && k < 12; ++k) {
    auto tag = "after:" + std::to_string(k);
    auto r = eng.append({make("E", {tag}, "a"), make("E", {tag}, "b")});
    if (r) {
      recovered.emplace_back(tag, *r);
    } else {
      EXPECT_EQ(code_of(r.error()), errc::unavailable) << message_of(r.error());
      EXPECT_TRUE(recovered.empty())
        << "failed after recovering: " << message_of(r.error());
      ++failures;
    }
  }
  ASSERT_EQ(recovered.size(), 5u);
  EXPECT_LE(failures, 3);

  // One read of everything, indexed by request tag.
  auto all = open_store(1)->read(query::all());
  std::map<std::string, std::vector<sequenced_event>> by_tag;
  for (std::size_t i = 0; i < all.events.size(); ++i) {
    ASSERT_EQ(all.events[i].position, i + 1) << "positions must be gap-free";
    ASSERT_EQ(all.events[i].event.tags.size(), 1u);
    by_tag[all.events[i].event.tags[0]].push_back(all.events[i]);
  }
  std::uint64_t acked_events = 0;
  int acked = 0, failed = 0;
  auto expect_stored = [&](const std::string& tag, const append_ack& ack) {
    auto& got = by_tag[tag];
    ASSERT_EQ(got.size(), 2u) << "acknowledged append lost: " << tag;
    EXPECT_EQ(got[0].position, ack.first_position) << tag;
    EXPECT_EQ(got[1].position, ack.last_position) << tag;
    EXPECT_EQ(got[0].event.data, "a") << tag;
    EXPECT_EQ(got[1].event.data, "b") << tag;
    acked_events += 2;
  };
  for (auto& o : outcomes) {
    if (o.result) {
      ++acked;
      expect_stored(o.tag, *o.result);
    } else {
      ++failed;
      EXPECT_EQ(code_of(o.result.error()), errc::unavailable)
        << o.tag << ": " << message_of(o.result.error());
      EXPECT_EQ(by_tag.count(o.tag), 0u)
        << "failed append is stored: " << o.tag;
    }
  }
  for (auto& [tag, ack] : recovered)
    expect_stored(tag, ack);
  RecordProperty("kills", std::to_string(kills));
  RecordProperty("acked", std::to_string(acked));
  RecordProperty("failed", std::to_string(failed));
  EXPECT_GT(acked, 0);
  EXPECT_GT(failed, 0) << "the terminations should have failed some appends";
  EXPECT_EQ(count_events(), acked_events);
  EXPECT_EQ(all.events.size(), acked_events);
  auto stats = eng.stats();
  ASSERT_TRUE(stats) << message_of(stats.error());
  EXPECT_GT(stats->reconnects, 0u);
  EXPECT_GT(stats->unavailable, 0u);
}

TEST_F(StoreActor, InvalidAppendsThroughAppendersWriteNothing) {
  auto& eng = start();
  auto item_without_values = append_condition{query{{query_item{}}}, 0};
  std::vector<std::pair<std::string, caf::expected<append_ack>>> cases;
  cases.emplace_back("no events", eng.append(append_request{}));
  cases.emplace_back("empty type", eng.append({make("", {"k:1"}, "d")}));
  cases.emplace_back("empty tag", eng.append({make("E", {""}, "d")}));
  cases.emplace_back("type with NUL",
                     eng.append({make(std::string{"A\0B", 3}, {}, "d")}));
  cases.emplace_back("one bad event among good ones",
                     eng.append({make("E", {"k:1"}, "d"),
                                 make(std::string(300, 'x'), {"k:1"}, "d")}));
  cases.emplace_back("condition item without values",
                     eng.append({make("E", {"k:1"}, "d")},
                                item_without_values));
  for (auto& [name, r] : cases) {
    ASSERT_FALSE(r) << name << " was accepted";
    EXPECT_EQ(code_of(r.error()), errc::invalid_argument)
      << name << ": " << message_of(r.error());
  }
  EXPECT_EQ(count_events(), 0u);
  // The appenders stopped them before the store, which is alive and well.
  auto stats = eng.stats();
  ASSERT_TRUE(stats) << message_of(stats.error());
  EXPECT_EQ(stats->groups, 0u);
  EXPECT_EQ(stats->invalid, 0u);
  auto ok = eng.append({make("E", {"k:1"}, "d")});
  ASSERT_TRUE(ok) << message_of(ok.error());
  EXPECT_EQ(ok->first_position, 1u);
  EXPECT_EQ(count_events(), 1u);
}

// The store actor takes validated appends only, so an invalid request is
// refused by its appender and never reaches a group; the others commit.
TEST_F(StoreActor, InvalidRequestFailsAloneAndNeverReachesTheStore) {
  auto& eng = start();
  auto reqs = tagged_requests(20);
  reqs[7].events.push_back(make("", {"k:1"}, "bad"));
  auto out = append_all(*sys_, eng.appenders(), reqs, 1);
  ASSERT_FALSE(out[7]);
  EXPECT_EQ(code_of(out[7].error()), errc::invalid_argument)
    << message_of(out[7].error());
  for (std::size_t i = 0; i < out.size(); ++i)
    if (i != 7) {
      EXPECT_TRUE(out[i]) << "request " << i << ": "
                          << message_of(out[i].error());
    }
  expect_acked_stored_exactly(reqs, out);
  auto stats = eng.stats();
  ASSERT_TRUE(stats) << message_of(stats.error());
  EXPECT_EQ(stats->invalid, 0u) << "validation happens before the store";
  EXPECT_EQ(stats->appended, 19u);
  EXPECT_GT(stats->max_group, 1u) << "the requests should share groups";
}

} // namespace
} // namespace dcbd::test
