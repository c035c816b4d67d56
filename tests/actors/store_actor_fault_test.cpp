// The store actor under pressure and faults: admission control (overload
// fails fast, the mailbox bound), connections terminated during a stream of
// appends, and invalid input that never reaches a group.
#include "tests/actors/store_actor_support.hpp"

namespace dcbd::test {
namespace {

class StoreActorFaults : public StoreActorTest {};

TEST_F(StoreActorFaults, OverloadedAppendsFailFastAndStoreNothing) {
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

TEST_F(StoreActorFaults, DirectSendsAreBoundedByTheStoreMailbox) {
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

TEST_F(StoreActorFaults, RecoversFromTerminatedConnectionsWithoutLosingAcks) {
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

TEST_F(StoreActorFaults, InvalidAppendsThroughAppendersWriteNothing) {
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
  // The appenders validate as well (commands and the asynchronous
  // engine::append go through them).
  auto through = ask<append_ack>(*sys_, eng.appenders(), append_atom::value,
                                 append_request{});
  ASSERT_FALSE(through);
  EXPECT_EQ(code_of(through.error()), errc::invalid_argument);
  EXPECT_EQ(count_events(), 0u);
  // Validation stopped them before the store, which is alive and well.
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
TEST_F(StoreActorFaults, InvalidRequestFailsAloneAndNeverReachesTheStore) {
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
