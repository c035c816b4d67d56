// Test support: an actor system plus an engine on a fresh PostgreSQL schema.
#pragma once

#include "actors/engine.hpp"
#include "actors/types.hpp"
#include "tests/support/pg_fixture.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <memory>
#include <optional>

namespace dcbd::test {

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

} // namespace dcbd::test
