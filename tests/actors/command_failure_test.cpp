// Commands whose user code fails (a throwing decide() or projector fails
// that command only) and the supervision of the appender pool (killed
// workers are replaced, even in a pool of one).
#include "tests/actors/command_support.hpp"

namespace dcbd::test {
namespace {

class CommandFailures : public CommandsTest {};

// -- failing user code and supervision ----------------------------------------

TEST_F(CommandFailures, ThrowingDecideFailsOnlyThatCommandAndTheNodeSurvives) {
  auto& eng = start();
  define(eng, "c1", 100);
  auto workers = workers_of(*sys_, eng.appenders());
  ASSERT_EQ(workers.size(), 2u);
  caf::scoped_actor watcher{*sys_};
  for (auto& w : workers)
    watcher->monitor(w);
  command boom{"boom",
               {courses::course_projector("c1")},
               [](const decision_states&) -> verdict {
                 throw std::runtime_error("kaboom");
               }};
  command odd{"odd",
              {courses::course_projector("c1")},
              [](const decision_states&) -> verdict {
                throw 42;
              }};
  // Twenty commands on boundaries of their own run around the failing ones.
  auto good_one = [&](int i) {
    return execute_async(eng,
                         courses::define_course("g" + std::to_string(i), 5));
  };
  std::vector<std::future<caf::expected<command_outcome>>> good;
  for (int i = 0; i < 10; ++i)
    good.push_back(good_one(i));
  auto boom_result = execute_async(eng, std::move(boom));
  auto odd_result = execute_async(eng, std::move(odd));
  for (int i = 10; i < 20; ++i)
    good.push_back(good_one(i));
  auto b = boom_result.get();
  ASSERT_FALSE(b);
  EXPECT_EQ(code_of(b.error()), errc::internal);
  EXPECT_TRUE(
    contains(message_of(b.error()), "command 'boom': decide() threw: kaboom"));
  auto o = odd_result.get();
  ASSERT_FALSE(o);
  EXPECT_EQ(code_of(o.error()), errc::internal);
  EXPECT_TRUE(contains(message_of(o.error()), "command 'odd': decide() threw"));
  for (auto& f : good) {
    auto r = f.get();
    EXPECT_TRUE(r && r->accepted) << (r ? r->rejection : message_of(r.error()));
  }
  // No appender went down, and the pool still has the same ones.
  bool down = false;
  watcher->receive(
    [&](caf::down_msg& dm) {
      down = true;
      ADD_FAILURE() << "an appender went down: " << message_of(dm.reason);
    },
    caf::after(std::chrono::milliseconds{200}) >> [] {});
  EXPECT_FALSE(down);
  EXPECT_EQ(workers_of(*sys_, eng.appenders()), workers);
  auto after = eng.execute(courses::subscribe("late", "g0", 2));
  ASSERT_TRUE(after) << message_of(after.error());
  EXPECT_TRUE(after->accepted) << after->rejection;
  EXPECT_EQ(
    sql("SELECT count(*) FROM " + events() + " WHERE type = 'CourseDefined'"),
    "21");
}

TEST_F(CommandFailures, ThrowingProjectorFailsTheCommandNamingTheProjector) {
  auto& eng = start();
  define(eng, "c1", 10);
  auto readers = workers_of(*sys_, eng.readers());
  ASSERT_EQ(readers.size(), 2u);
  caf::scoped_actor watcher{*sys_};
  for (auto& w : readers)
    watcher->monitor(w);
  auto broken = make_projector("broken",
                               courses::tagged({"CourseDefined"}, "course:c1"),
                               0, [](int&, const sequenced_event&) {
                                 throw std::runtime_error("cannot fold");
                               });
  command cmd{"fold", {std::move(broken)}, [](const decision_states&) {
                return verdict::accept({});
              }};
  for (int i = 0; i < 4; ++i) { // reaches both readers
    auto r = eng.execute(cmd);
    ASSERT_FALSE(r);
    EXPECT_EQ(code_of(r.error()), errc::internal);
    EXPECT_TRUE(
      contains(message_of(r.error()), "projector 'broken' threw: cannot fold"));
  }
  bool down = false;
  watcher->receive(
    [&](caf::down_msg&) {
      down = true;
    },
    caf::after(std::chrono::milliseconds{200}) >> [] {});
  EXPECT_FALSE(down) << "a reader went down";
  auto ok = eng.execute(courses::subscribe("s1", "c1", 2));
  ASSERT_TRUE(ok) << message_of(ok.error());
  EXPECT_TRUE(ok->accepted);
}

TEST_F(CommandFailures, KilledAppenderIsReplaced) {
  auto& eng = start();
  define(eng, "c1", 100);
  auto before = workers_of(*sys_, eng.appenders());
  ASSERT_EQ(before.size(), 2u);
  caf::anon_send_exit(before[0], caf::exit_reason::kill);
  auto after = await_workers(*sys_, eng.appenders(), 2, before[0]);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_TRUE(std::find(after.begin(), after.end(), before[0]) == after.end());
  EXPECT_TRUE(std::find(after.begin(), after.end(), before[1]) != after.end());
  for (int i = 0; i < 6; ++i) {
    auto r = eng.execute(courses::subscribe("s" + std::to_string(i), "c1", 2));
    ASSERT_TRUE(r) << message_of(r.error());
    EXPECT_TRUE(r->accepted) << r->rejection;
  }
  // Stopping the engine stops the replacement too.
  stop();
  EXPECT_EQ(await_no_actors(*sys_), 0u)
    << "actors still running after the engine stopped";
}

// A pool outlives its last worker (caf::actor_pool would quit with
// out_of_workers and leave the replacement running unsupervised).
TEST_F(CommandFailures, PoolOfOneSurvivesItsAppenderDying) {
  auto cfg = config();
  cfg.appenders = 1;
  auto& eng = start(cfg);
  define(eng, "c1", 100);
  auto before = workers_of(*sys_, eng.appenders());
  ASSERT_EQ(before.size(), 1u);
  {
    // Scoped: a scoped actor counts as running until it goes.
    caf::scoped_actor watcher{*sys_};
    watcher->monitor(caf::actor_cast<caf::actor>(eng.appenders()));
    caf::anon_send_exit(before[0], caf::exit_reason::kill);
    auto after = await_workers(*sys_, eng.appenders(), 1, before[0]);
    ASSERT_EQ(after.size(), 1u);
    auto r = eng.execute(courses::subscribe("s1", "c1", 2));
    ASSERT_TRUE(r) << message_of(r.error());
    EXPECT_TRUE(r->accepted) << r->rejection;
    watcher->receive(
      [&](caf::down_msg& dm) {
        ADD_FAILURE() << "the appender pool went down: "
                      << message_of(dm.reason);
      },
      caf::after(std::chrono::milliseconds{200}) >> [] {});
  }
  // Stopping the engine stops every actor it spawned.
  stop();
  EXPECT_EQ(await_no_actors(*sys_), 0u)
    << "actors still running after the engine stopped";
}

} // namespace
} // namespace dcbd::test
