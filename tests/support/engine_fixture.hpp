// Test support: an actor system plus an engine on a fresh PostgreSQL schema.
#pragma once

#include "actors/engine.hpp"
#include "actors/types.hpp"
#include "tests/support/pg_fixture.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <future>
#include <memory>
#include <optional>

namespace dcbd::test {

/// Sets up `cfg` as every test's actor system: dcbd's message types, the
/// node's scheduler tuning, two scheduler threads, no console logging.
void configure_test_system(caf::actor_system_config& cfg);

/// Owns an actor system (two scheduler threads) and, after `start()`, an
/// engine on this test's schema. The engine goes before the system.
class EngineTest : public PgSchemaTest {
protected:
  EngineTest();
  ~EngineTest() override;

  void TearDown() override;

  /// The engine settings `start()` uses; adjust before calling it.
  engine_config config();

  /// Starts the engine with `cfg` (default: `config()`).
  engine& start(std::optional<engine_config> cfg = std::nullopt);

  /// Stops the engine (answers what is in flight).
  void stop();

  caf::actor_system_config sys_cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  std::unique_ptr<engine> engine_;
};

/// A second node in the same process (e.g. on the test's schema, as another
/// dcbd process would be): its own actor system and engine (stopped before
/// its system).
struct other_node {
  explicit other_node(const engine_config& ec)
    : sys{configured(cfg)}
    , eng{sys, ec} {
  }

  static caf::actor_system_config& configured(caf::actor_system_config& c) {
    configure_test_system(c);
    return c;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  engine eng;
};

/// Sends `xs...` to `dest` as a request from a short-lived event-based actor
/// and waits for the reply (a scoped_actor's blocking receive does not match
/// typed replies delivered through response promises in CAF 0.17.6).
template <class T, class Handle, class... Ts>
caf::expected<T> ask(caf::actor_system& sys, const Handle& dest, Ts... xs) {
  auto p = std::make_shared<std::promise<caf::expected<T>>>();
  auto f = p->get_future();
  sys.spawn([=](caf::event_based_actor* self) {
    self->request(dest, std::chrono::seconds{60}, xs...)
      .then(
        [p](T& x) {
          p->set_value(std::move(x));
        },
        [p](caf::error& err) {
          p->set_value(std::move(err));
        });
  });
  return f.get();
}

/// Stops `handle` with `user_shutdown` and waits until it is gone.
void stop_actor(caf::actor_system& sys, const caf::actor& handle);

/// Stops a typed actor; see `stop_actor(caf::actor_system&, const
/// caf::actor&)`.
template <class Handle>
void stop_actor(caf::actor_system& sys, const Handle& handle) {
  stop_actor(sys, caf::actor_cast<caf::actor>(handle));
}

} // namespace dcbd::test
