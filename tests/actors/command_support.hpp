// Test support for the command suites (command_test.cpp: the domain, its
// rules under concurrency, retries; command_failure_test.cpp: failing user
// code and the supervision of the appender pool).
#pragma once

#include "tests/actors/course_domain.hpp"
#include "tests/support/engine_fixture.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_registry.hpp>
#include <caf/after.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace dcbd::test {

using namespace std::chrono_literals;

inline constexpr auto call_timeout = std::chrono::seconds{60};

/// Whether `text` contains `part`, with both in the failure message.
inline ::testing::AssertionResult contains(const std::string& text,
                                           const std::string& part) {
  if (text.find(part) != std::string::npos)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "'" << text << "' does not contain '" << part << "'";
}

/// Runs `cmd` asynchronously; the future holds its result.
inline std::future<caf::expected<command_outcome>> execute_async(engine& eng,
                                                                 command cmd) {
  auto done = std::make_shared<std::promise<caf::expected<command_outcome>>>();
  auto result = done->get_future();
  eng.execute(std::move(cmd), [done](caf::expected<command_outcome> r) {
    done->set_value(std::move(r));
  });
  return result;
}

/// Runs `cmd` on the shortest path (`engine::execute_unbounded`: its first
/// round on this thread when the cache holds the model); the future holds
/// its result.
inline std::future<caf::expected<command_outcome>>
execute_unbounded_async(engine& eng, command cmd) {
  auto done = std::make_shared<std::promise<caf::expected<command_outcome>>>();
  auto result = done->get_future();
  eng.execute_unbounded(std::move(cmd),
                        [done](caf::expected<command_outcome> r) {
                          done->set_value(std::move(r));
                        });
  return result;
}

/// The workers of an actor pool, e.g. `eng.appenders()`.
template <class Pool>
std::vector<caf::actor> workers_of(caf::actor_system& sys, const Pool& pool) {
  auto r = ask<std::vector<caf::actor>>(sys, caf::actor_cast<caf::actor>(pool),
                                        caf::sys_atom::value,
                                        caf::get_atom::value);
  if (!r)
    ADD_FAILURE() << "cannot list the pool's workers: "
                  << message_of(r.error());
  return r ? std::move(*r) : std::vector<caf::actor>{};
}

/// Waits until `pool` has `n` workers, none of them `gone`; returns them.
template <class Pool>
std::vector<caf::actor> await_workers(caf::actor_system& sys, const Pool& pool,
                                      std::size_t n, const caf::actor& gone) {
  std::vector<caf::actor> ws;
  for (int i = 0; i < 100; ++i) {
    ws = workers_of(sys, pool);
    if (ws.size() == n && std::find(ws.begin(), ws.end(), gone) == ws.end())
      return ws;
    std::this_thread::sleep_for(50ms);
  }
  return ws;
}

/// Waits up to two seconds for `sys` to have no running actors; returns how
/// many still run.
inline std::size_t await_no_actors(caf::actor_system& sys) {
  for (int i = 0; i < 40 && sys.registry().running() > 0; ++i)
    std::this_thread::sleep_for(50ms);
  return sys.registry().running();
}

/// Runs a SQL count or aggregate on the test server; "" for NULL.
inline std::string sql(const std::string& text) {
  return exec_sql(text);
}

/// An event of `type` tagged `tags`, with `data`.
inline event ev(std::string type, std::vector<std::string> tags,
                bytes data = "d") {
  return event{std::move(type), std::move(tags), std::move(data), {}};
}

/// An engine on a fresh schema, with SQL views of its log.
class CommandsTest : public EngineTest {
protected:
  /// `schema.events`, for SQL.
  std::string events() const {
    return schema_ + ".events";
  }

  /// Number of events in the log, counted with SQL.
  std::string count_events() {
    return sql("SELECT count(*) FROM " + events());
  }

  /// Defines `course` with `capacity` and asserts that it was accepted.
  void define(engine& eng, const std::string& course, int capacity) {
    auto r = eng.execute(courses::define_course(course, capacity));
    ASSERT_TRUE(r) << message_of(r.error());
    ASSERT_TRUE(r->accepted) << r->rejection;
  }
};

} // namespace dcbd::test
