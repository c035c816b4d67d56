#include "tests/support/engine_fixture.hpp"

#include <caf/scoped_actor.hpp>

namespace dcbd::test {

void configure_test_system(caf::actor_system_config& cfg) {
  register_types(cfg);
  tune_scheduler(cfg);
  cfg.set("scheduler.max-threads", 2);
  cfg.set("logger.console", caf::atom("none"));
}

EngineTest::EngineTest() {
  configure_test_system(sys_cfg_);
  sys_ = std::make_unique<caf::actor_system>(sys_cfg_);
}

EngineTest::~EngineTest() {
  engine_.reset();
  sys_.reset();
}

void EngineTest::TearDown() {
  engine_.reset();
  PgSchemaTest::TearDown();
}

engine_config EngineTest::config() {
  engine_config cfg;
  cfg.store = test_config(schema_);
  cfg.readers = 2;
  cfg.appenders = 2;
  cfg.timeout = std::chrono::milliseconds{60'000};
  return cfg;
}

engine& EngineTest::start(std::optional<engine_config> cfg) {
  engine_ = std::make_unique<engine>(*sys_, cfg ? std::move(*cfg) : config());
  return *engine_;
}

void EngineTest::stop() {
  engine_.reset();
}

void stop_actor(caf::actor_system& sys, const caf::actor& handle) {
  if (!handle)
    return;
  caf::scoped_actor self{sys};
  self->monitor(handle);
  self->send_exit(handle, caf::exit_reason::user_shutdown);
  self->receive([](const caf::down_msg&) {});
}

} // namespace dcbd::test
