// Test support for the store actor suites (store_actor_test.cpp: group
// commit and listeners; store_actor_fault_test.cpp: admission control,
// terminated connections and invalid input).
#pragma once

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
inline auto as_message(const append_request& req) {
  if constexpr (std::is_same_v<Handle, store_actor>)
    return validate_append(req, limits{});
  else
    return req;
}

// Sends every request at once, request i from sender i % senders (each an
// event-based actor that fires its share without waiting), and returns the
// replies in request order.
template <class Handle>
inline std::vector<append_outcome>
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

inline event make(std::string type, std::vector<std::string> tags,
                  std::string data) {
  return event{std::move(type), std::move(tags), std::move(data), {}};
}

// Request i: 1 + i % 3 events, all tagged "req:i".
inline std::vector<append_request> tagged_requests(std::size_t n) {
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

inline std::vector<std::string> sorted(std::vector<std::string> xs) {
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  return xs;
}

/// An engine test with SQL checks of what was acknowledged.
class StoreActorTest : public EngineTest {
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

} // namespace dcbd::test
