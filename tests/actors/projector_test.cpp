// Projectors on a real PostgreSQL schema: catch-up then live, exactly-once
// checkpoints (the read model equals a recount), poison events (park and
// continue, stop), retry and skip of dead letters, pause, resume, rebuild,
// version bumps, at-least-once redelivery, one owner among two hosts with
// takeover and epoch fencing, a broken database connection, bad specs.
#include "actors/projector.hpp"

#include "tests/support/engine_fixture.hpp"

#include <gtest/gtest.h>
#include <pqxx/connection>
#include <pqxx/nontransaction>
#include <pqxx/transaction>

#include <atomic>
#include <future>
#include <thread>

namespace dcbd::test {
namespace {

using namespace std::chrono_literals;

event subscribed(std::string course) {
  return event{
    "StudentSubscribed", {"course:" + course}, std::move(course), {}};
}

/// Waits up to `d` for `pred()`.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds d = 20s) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    if (pred())
      return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

class ProjectorTest : public EngineTest {
protected:
  /// Starts the engine (which installs the schema) and makes the tables.
  void go() {
    start();
    exec_sql("CREATE TABLE " + schema_
             + ".seats (course text PRIMARY KEY, n bigint NOT NULL)");
    exec_sql("CREATE TABLE " + schema_
             + ".seen (position bigint NOT NULL, epoch bigint NOT NULL)");
  }

  void TearDown() override {
    *hold_ = false; // a failed test must not leave a handler waiting
    hosts_.clear();
    other_.reset();
    EngineTest::TearDown();
  }

  projector_host& host(std::string node = "n1", engine* eng = nullptr) {
    projector_host_config cfg;
    cfg.node = std::move(node);
    hosts_.push_back(
      std::make_unique<projector_host>(*sys_, eng ? *eng : *engine_, cfg));
    return *hosts_.back();
  }

  /// `course_seats`: +1 per StudentSubscribed on seats(course); data "bad"
  /// throws while `reject_bad` is set; batches wait while `hold_` is.
  projector_spec seats(std::string name = "course_seats") {
    projector_spec spec;
    spec.name = std::move(name);
    spec.query = query{{query_item{{"StudentSubscribed"}, {}}}};
    spec.retry.attempts = 2;
    spec.retry.first = 1ms;
    spec.retry.max = 20ms;
    auto reject = reject_bad_;
    auto calls = batches_;
    auto hold = hold_;
    spec.handle = [s = schema_, reject, calls,
                   hold](pqxx::work& tx, const event_batch& events,
                         const projector_context& ctx) {
      ++*calls;
      while (*hold)
        std::this_thread::sleep_for(1ms);
      for (auto& e : events) {
        if (*reject && e.event.data == "bad")
          throw std::runtime_error("not a course: bad");
        tx.exec_params("INSERT INTO " + s
                         + ".seats VALUES ($1, 1) ON CONFLICT (course) DO "
                           "UPDATE SET n = seats.n + 1",
                       e.event.data);
        tx.exec_params("INSERT INTO " + s + ".seen VALUES ($1, $2)",
                       static_cast<std::int64_t>(e.position),
                       static_cast<std::int64_t>(ctx.epoch));
      }
    };
    spec.on_reset = [s = schema_, resets = resets_](pqxx::work& tx) {
      ++*resets;
      tx.exec("DELETE FROM " + s + ".seats");
      tx.exec("DELETE FROM " + s + ".seen");
    };
    return spec;
  }

  void append_courses(std::size_t n, std::size_t from = 0) {
    for (std::size_t i = 0; i < n; ++i) {
      std::vector<event> evs{subscribed("c" + std::to_string((from + i) % 7))};
      if (i % 5 == 0)
        evs.push_back(event{"Other", {"x:y"}, "o", {}});
      ASSERT_TRUE(engine_->append(std::move(evs)));
    }
  }

  std::string seats_table() {
    return exec_sql("SELECT coalesce(string_agg(course || '=' || n, ',' "
                    "ORDER BY course), '') FROM "
                    + schema_ + ".seats");
  }

  std::string recount(std::string excluded = "bad") {
    return exec_sql("SELECT coalesce(string_agg(course || '=' || n, ',' "
                    "ORDER BY course), '') FROM (SELECT convert_from(data, "
                    "'UTF8') AS course, count(*) AS n FROM "
                    + schema_
                    + ".events WHERE type = 'StudentSubscribed' AND "
                      "convert_from(data, 'UTF8') <> '"
                    + excluded + "' GROUP BY 1) c");
  }

  std::uint64_t head() {
    return *engine_->head();
  }

  std::optional<projector_status> local(projector_host& h,
                                        const std::string& name) {
    for (auto& s : h.snapshot())
      if (s.name == name)
        return s;
    return std::nullopt;
  }

  bool caught_up(projector_host& h, const std::string& name,
                 std::chrono::milliseconds d = 20s) {
    auto target = head();
    return eventually(
      [&] {
        auto s = local(h, name);
        return s && s->state == projector_state::running
               && s->position >= target;
      },
      d);
  }

  std::uint64_t row_position(const std::string& name) {
    return std::stoull(exec_sql("SELECT position FROM " + schema_
                                + ".projectors WHERE name = '" + name + "'"));
  }

  std::shared_ptr<std::atomic<bool>> reject_bad_
    = std::make_shared<std::atomic<bool>>(true);
  std::shared_ptr<std::atomic<int>> batches_
    = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> resets_
    = std::make_shared<std::atomic<int>>(0);
  // While set, the handler waits (a batch in flight, held).
  std::shared_ptr<std::atomic<bool>> hold_
    = std::make_shared<std::atomic<bool>>(false);
  std::vector<std::unique_ptr<projector_host>> hosts_;
  // A second node's engine on the same schema.
  std::unique_ptr<engine> other_;
};

TEST_F(ProjectorTest, CatchesUpThenFollowsLiveExactlyOnce) {
  go();
  append_courses(300);
  auto& h = host();
  h.add(seats());
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(seats_table(), recount());
  append_courses(200, 300);
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(seats_table(), recount());
  // Each event was applied once: `seen` has every matching position once.
  EXPECT_EQ(exec_sql("SELECT count(*) - count(DISTINCT position) FROM "
                     + schema_ + ".seen"),
            "0");
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_ + ".seen"), "500");
  // Catch-up came in batches, not event by event.
  EXPECT_LT(batches_->load(), 250);
  // The checkpoint in the row is durable and at the head (the last event
  // of the log matches the query, so nothing is left to scan).
  EXPECT_TRUE(eventually([&] {
    return row_position("course_seats") >= head() - 1;
  }));
  auto s = local(h, "course_seats");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->owner, "n1");
  EXPECT_GE(s->epoch, 1u);
  EXPECT_EQ(s->dead_letters, 0u);
}

TEST_F(ProjectorTest, PoisonEventIsParkedAndLaterEventsGoOn) {
  go();
  append_courses(40);
  ASSERT_TRUE(engine_->append({subscribed("bad")}));
  auto bad = head();
  append_courses(40, 40);
  auto& h = host();
  h.add(seats());
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(seats_table(), recount("bad"));
  auto s = h.status_blocking("course_seats");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->dead_letters, 1u);
  std::promise<std::optional<std::vector<dead_letter>>> p;
  h.dead_letters(
    "course_seats",
    [&p](caf::expected<std::optional<std::vector<dead_letter>>> r) {
      p.set_value(r ? *r : std::nullopt);
    });
  auto letters = p.get_future().get();
  ASSERT_TRUE(letters);
  ASSERT_EQ(letters->size(), 1u);
  EXPECT_EQ(letters->at(0).position, bad);
  EXPECT_NE(letters->at(0).error.find("not a course"), std::string::npos);
  EXPECT_EQ(letters->at(0).attempts, 2u);

  // Retry while the handler still rejects it: 409, attempts grow.
  auto r = h.control_blocking("course_seats",
                              projector_action::retry_dead_letter, bad);
  EXPECT_EQ(r.what, projector_reply::code::conflict) << r.message;
  EXPECT_EQ(
    exec_sql("SELECT attempts FROM " + schema_ + ".projector_dead_letters"),
    "3");
  // Unknown positions are 404, unknown projectors too.
  r = h.control_blocking("course_seats", projector_action::retry_dead_letter,
                         bad + 1);
  EXPECT_EQ(r.what, projector_reply::code::not_found);
  r = h.control_blocking("nope", projector_action::pause);
  EXPECT_EQ(r.what, projector_reply::code::not_found);

  // Once the handler accepts it, a retry applies it and the letter goes.
  *reject_bad_ = false;
  r = h.control_blocking("course_seats", projector_action::retry_dead_letter,
                         bad);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(r.status.dead_letters, 0u);
  EXPECT_EQ(seats_table(), recount("-"));

  // Skip: parks another bad event, then drops it without applying it.
  *reject_bad_ = true;
  ASSERT_TRUE(engine_->append({subscribed("bad")}));
  auto bad2 = head();
  ASSERT_TRUE(caught_up(h, "course_seats"));
  ASSERT_TRUE(eventually([&] {
    return exec_sql("SELECT count(*) FROM " + schema_
                    + ".projector_dead_letters")
           == "1";
  }));
  r = h.control_blocking("course_seats", projector_action::skip_dead_letter,
                         bad2);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(
    exec_sql("SELECT count(*) FROM " + schema_ + ".projector_dead_letters"),
    "0");
  r = h.control_blocking("course_seats", projector_action::skip_dead_letter,
                         bad2);
  EXPECT_EQ(r.what, projector_reply::code::not_found);
  EXPECT_EQ(
    exec_sql("SELECT n FROM " + schema_ + ".seats WHERE course = 'bad'"), "1");

  // The count in memory (what the metric shows) follows the table: a node
  // that takes the projector over shows the letters parked before, and a
  // skip done through another node.
  ASSERT_TRUE(engine_->append({subscribed("bad")}));
  ASSERT_TRUE(caught_up(h, "course_seats"));
  ASSERT_TRUE(eventually([&] {
    return exec_sql("SELECT count(*) FROM " + schema_
                    + ".projector_dead_letters")
           == "1";
  }));
  hosts_.clear();
  auto& again = host();
  again.add(seats());
  ASSERT_TRUE(caught_up(again, "course_seats"));
  EXPECT_TRUE(eventually([&] {
    auto s = local(again, "course_seats");
    return s && s->dead_letters == 1;
  }));
  exec_sql("DELETE FROM " + schema_ + ".projector_dead_letters");
  EXPECT_TRUE(eventually([&] {
    auto s = local(again, "course_seats");
    return s && s->dead_letters == 0;
  }));
}

TEST_F(ProjectorTest, StopPolicyHoldsAtThePoisonEventUntilResumed) {
  go();
  append_courses(20);
  ASSERT_TRUE(engine_->append({subscribed("bad")}));
  auto bad = head();
  append_courses(20, 20);
  auto& h = host();
  auto spec = seats();
  spec.on_poison = poison_policy::stop;
  h.add(std::move(spec));
  ASSERT_TRUE(eventually([&] {
    auto s = local(h, "course_seats");
    return s && s->state == projector_state::failed;
  }));
  auto s = local(h, "course_seats");
  EXPECT_EQ(s->position, bad - 1);
  EXPECT_NE(s->error.find("not a course"), std::string::npos);
  EXPECT_EQ(row_position("course_seats"), bad - 1);
  EXPECT_NE(exec_sql("SELECT failed FROM " + schema_ + ".projectors"), "");
  // Resuming a failed projector clears the failure; resuming one that runs
  // changes nothing and answers its status.
  *reject_bad_ = false;
  auto r = h.control_blocking("course_seats", projector_action::resume);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(seats_table(), recount("-"));
  auto epoch = local(h, "course_seats")->epoch;
  r = h.control_blocking("course_seats", projector_action::resume);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(r.status.state, projector_state::running);
  EXPECT_EQ(r.status.epoch, epoch);
  EXPECT_EQ(exec_sql("SELECT failed FROM " + schema_ + ".projectors"), "");
  EXPECT_EQ(exec_sql("SELECT paused FROM " + schema_ + ".projectors"), "f");
}

TEST_F(ProjectorTest, PauseResumeAndRebuild) {
  go();
  append_courses(50);
  auto& h = host();
  h.add(seats());
  ASSERT_TRUE(caught_up(h, "course_seats"));
  auto r = h.control_blocking("course_seats", projector_action::pause);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(r.status.state, projector_state::paused);
  // Pausing a paused projector changes nothing: 200 with its status.
  r = h.control_blocking("course_seats", projector_action::pause);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(r.status.state, projector_state::paused);
  EXPECT_EQ(exec_sql("SELECT paused FROM " + schema_ + ".projectors"), "t");
  auto before = row_position("course_seats");
  append_courses(30, 50);
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(row_position("course_seats"), before);
  EXPECT_NE(seats_table(), recount());
  r = h.control_blocking("course_seats", projector_action::resume);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(seats_table(), recount());

  // Rebuild: on_reset clears the table, the checkpoint goes to 0, and the
  // catch-up recounts everything.
  exec_sql("UPDATE " + schema_ + ".seats SET n = n + 1000");
  r = h.control_blocking("course_seats", projector_action::rebuild);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(resets_->load(), 1);
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(seats_table(), recount());
  EXPECT_EQ(exec_sql("SELECT count(*) - count(DISTINCT position) FROM "
                     + schema_ + ".seen"),
            "0");
}

TEST_F(ProjectorTest, RebuildWhileRebuildingAnswersItsStatusAndResetsOnce) {
  go();
  append_courses(50);
  auto& h = host();
  h.add(seats());
  ASSERT_TRUE(caught_up(h, "course_seats"));
  // Held in the handler, the rebuild's catch-up cannot end.
  *hold_ = true;
  auto r = h.control_blocking("course_seats", projector_action::rebuild);
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(r.status.state, projector_state::rebuilding);
  EXPECT_EQ(resets_->load(), 1);
  r = h.control_blocking("course_seats", projector_action::rebuild);
  *hold_ = false;
  ASSERT_EQ(r.what, projector_reply::code::ok) << r.message;
  EXPECT_EQ(r.status.state, projector_state::rebuilding);
  EXPECT_EQ(resets_->load(), 1) << "the second rebuild reset nothing";
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(resets_->load(), 1);
  EXPECT_EQ(seats_table(), recount());
  EXPECT_EQ(exec_sql("SELECT count(*) - count(DISTINCT position) FROM "
                     + schema_ + ".seen"),
            "0");
}

TEST_F(ProjectorTest, VersionBumpRebuilds) {
  go();
  append_courses(30);
  {
    auto& h = host();
    h.add(seats());
    ASSERT_TRUE(caught_up(h, "course_seats"));
    hosts_.clear();
  }
  EXPECT_EQ(resets_->load(), 0);
  exec_sql("UPDATE " + schema_ + ".seats SET n = 0");
  auto& h = host();
  auto spec = seats();
  spec.version = 2;
  h.add(std::move(spec));
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(resets_->load(), 1);
  EXPECT_EQ(seats_table(), recount());
  EXPECT_EQ(exec_sql("SELECT version FROM " + schema_ + ".projectors"), "2");
}

// A rolling upgrade: the read model was rebuilt by a newer version. An
// older node that gets the projector holds it failed, and neither its own
// management calls nor a rebuild asked for through the row make it reset
// the table back to its version.
TEST_F(ProjectorTest, AnOlderVersionNeverActsOnANewerReadModel) {
  go();
  append_courses(30);
  {
    auto& h = host();
    auto spec = seats();
    spec.version = 2;
    h.add(std::move(spec));
    ASSERT_TRUE(caught_up(h, "course_seats"));
    hosts_.clear();
  }
  auto resets = resets_->load();
  auto position = row_position("course_seats");
  auto& h = host();
  h.add(seats());
  ASSERT_TRUE(eventually([&] {
    auto s = local(h, "course_seats");
    return s && s->state == projector_state::failed;
  }));
  EXPECT_NE(local(h, "course_seats")->error.find("newer"), std::string::npos);
  for (auto a : {projector_action::rebuild, projector_action::resume}) {
    auto r = h.control_blocking("course_seats", a);
    EXPECT_EQ(r.what, projector_reply::code::conflict) << r.message;
    EXPECT_NE(r.message.find("newer"), std::string::npos) << r.message;
  }
  EXPECT_EQ(
    exec_sql("SELECT paused OR rebuild FROM " + schema_ + ".projectors"), "f")
    << "a refused call records no intent";
  // A rebuild asked for through another node, as the row says.
  exec_sql("UPDATE " + schema_ + ".projectors SET rebuild = true");
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(exec_sql("SELECT version FROM " + schema_ + ".projectors"), "2");
  EXPECT_EQ(row_position("course_seats"), position);
  EXPECT_EQ(resets_->load(), resets);
  EXPECT_EQ(seats_table(), recount());
}

TEST_F(ProjectorTest, AtLeastOnceRedeliversAfterALostSessionAndSkipsNone) {
  go();
  auto& h = host();
  auto spec = seats();
  spec.mode = projector_delivery::at_least_once;
  spec.checkpoint_events = 1'000'000;
  spec.checkpoint_interval = 600s;
  h.add(std::move(spec));
  append_courses(60);
  auto first_head = head();
  ASSERT_TRUE(caught_up(h, "course_seats"));
  // Applied, but not checkpointed yet.
  EXPECT_EQ(row_position("course_seats"), 0u);
  // The lock session dies: the node loses ownership, its instance stops
  // without a checkpoint; the host takes the projector over again under a
  // new epoch and resumes from the checkpoint.
  auto epoch = local(h, "course_seats")->epoch;
  ASSERT_NE(h.lock_pid(), 0);
  exec_sql("SELECT pg_terminate_backend(" + std::to_string(h.lock_pid()) + ")");
  ASSERT_TRUE(eventually([&] {
    auto s = local(h, "course_seats");
    return s && s->epoch > epoch && s->state == projector_state::running
           && s->position >= first_head;
  }));
  // Every matching position was applied at least once; the ones before the
  // checkpoint were applied again.
  EXPECT_EQ(exec_sql("SELECT count(*) FROM (SELECT position FROM " + schema_
                     + ".events WHERE type = 'StudentSubscribed' EXCEPT "
                       "SELECT position FROM "
                     + schema_ + ".seen) missing"),
            "0");
  EXPECT_EQ(exec_sql("SELECT count(*) > count(DISTINCT position) FROM "
                     + schema_ + ".seen"),
            "t");
}

TEST_F(ProjectorTest, ExactlyOnceSurvivesALostLockSessionAndConnection) {
  go();
  auto& h = host();
  h.add(seats());
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    std::size_t i = 0;
    while (writing) {
      engine_->append({subscribed("c" + std::to_string(i++ % 5))});
      std::this_thread::sleep_for(1ms);
    }
  });
  std::this_thread::sleep_for(300ms);
  // This test's connections go (not those of tests running beside it): the
  // lock session, and every connection whose last statement named this
  // schema (the instance's, the engine's readers and writer).
  ASSERT_NE(h.lock_pid(), 0);
  auto killed = exec_sql(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
    "pid <> pg_backend_pid() AND (pid = "
    + std::to_string(h.lock_pid()) + " OR query LIKE '%" + schema_ + "%')");
  EXPECT_GE(std::stoi(killed), 3);
  std::this_thread::sleep_for(500ms);
  writing = false;
  writer.join();
  ASSERT_TRUE(caught_up(h, "course_seats", 30s));
  EXPECT_EQ(seats_table(), recount());
  EXPECT_EQ(exec_sql("SELECT count(*) - count(DISTINCT position) FROM "
                     + schema_ + ".seen"),
            "0");
}

TEST_F(ProjectorTest, OneOwnerAmongTwoHostsTakeoverAndFencing) {
  go();
  append_courses(30);
  other_ = std::make_unique<engine>(*sys_, config());
  auto& a = host("a");
  a.add(seats());
  ASSERT_TRUE(caught_up(a, "course_seats"));
  auto& b = host("b", other_.get());
  b.add(seats());
  std::this_thread::sleep_for(800ms);
  // b stands by: it knows the owner.
  auto sb = local(b, "course_seats");
  ASSERT_TRUE(sb);
  EXPECT_EQ(sb->state, projector_state::standby);
  auto listed = b.status_blocking("course_seats");
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->state, projector_state::standby);
  EXPECT_EQ(listed->owner, "a");
  auto old_epoch = local(a, "course_seats")->epoch;

  // a stops (its locks go with its session): b takes over under a new epoch.
  hosts_.front()->stop();
  append_courses(20, 30);
  ASSERT_TRUE(eventually([&] {
    auto s = local(b, "course_seats");
    return s && s->state == projector_state::running;
  }));
  ASSERT_TRUE(caught_up(b, "course_seats"));
  EXPECT_EQ(seats_table(), recount());
  auto new_epoch = local(b, "course_seats")->epoch;
  EXPECT_GT(new_epoch, old_epoch);
  EXPECT_EQ(exec_sql("SELECT owner FROM " + schema_ + ".projectors"), "b");

  // A stale instance's writes change nothing.
  pg_projector_session stale{test_config(schema_), "course_seats", old_epoch};
  auto before = row_position("course_seats");
  EXPECT_EQ(stale.checkpoint(before + 1000).outcome, projector_outcome::fenced);
  std::vector<event_batch::pointer> one{std::make_shared<const sequenced_event>(
    sequenced_event{1, {}, subscribed("zzz")})};
  auto r = stale.apply(seats().handle, event_batch{one.data(), 1},
                       projector_context{"course_seats", old_epoch, false},
                       before + 1000);
  EXPECT_EQ(r.outcome, projector_outcome::fenced);
  EXPECT_EQ(row_position("course_seats"), before);
  EXPECT_EQ(
    exec_sql("SELECT count(*) FROM " + schema_ + ".seats WHERE course = 'zzz'"),
    "0");
}

TEST_F(ProjectorTest, AnErrorThatIsNoValidUtf8IsParkedAndTheProjectorGoesOn) {
  go();
  append_courses(5);
  ASSERT_TRUE(engine_->append({subscribed("raw")}));
  auto raw = head();
  append_courses(5, 5);
  auto& h = host();
  auto spec = seats();
  auto inner = spec.handle;
  spec.handle = [inner](pqxx::work& tx, const event_batch& events,
                        const projector_context& ctx) {
    for (auto& e : events)
      if (e.event.data == "raw")
        throw std::runtime_error(std::string{"bad byte \xff\xfe and NUL "}
                                 + '\0' + " here");
    inner(tx, events, ctx);
  };
  h.add(std::move(spec));
  ASSERT_TRUE(caught_up(h, "course_seats"));
  EXPECT_EQ(seats_table(), recount("raw"));
  EXPECT_EQ(exec_sql("SELECT position || ':' || error FROM " + schema_
                     + ".projector_dead_letters"),
            std::to_string(raw) + ":bad byte ?? and NUL");
}

TEST_F(ProjectorTest, AStalledOwnersOpenBatchDoesNotBlockTheTakeoverForLong) {
  go();
  other_ = std::make_unique<engine>(*sys_, config());
  // The handler stalls inside its transaction on "stall" (as a SIGSTOPped
  // owner would) until the test releases it; once only, so that whichever
  // node takes over next (a's host may win the lock again) goes on.
  auto release = std::make_shared<std::promise<void>>();
  auto released = release->get_future().share();
  auto stalled = std::make_shared<std::atomic<bool>>(false);
  auto stalling = [&, released, stalled] {
    auto spec = seats();
    auto inner = spec.handle;
    spec.handle = [inner, released, stalled](pqxx::work& tx,
                                             const event_batch& events,
                                             const projector_context& ctx) {
      for (auto& e : events)
        if (e.event.data == "stall" && !stalled->exchange(true))
          released.wait_for(60s);
      inner(tx, events, ctx);
    };
    return spec;
  };
  auto& a = host("a");
  a.add(stalling());
  append_courses(5);
  ASSERT_TRUE(caught_up(a, "course_seats"));
  auto& b = host("b", other_.get());
  auto spec_b = seats();
  b.add(std::move(spec_b));
  ASSERT_TRUE(engine_->append({subscribed("stall")}));
  std::this_thread::sleep_for(300ms);
  // a's node loses its lock session while its batch is open; the server
  // ends that idle transaction (idle_in_transaction_session_timeout), so
  // the row it locks does not hold the takeover until the handler wakes.
  auto t0 = std::chrono::steady_clock::now();
  exec_sql("SELECT pg_terminate_backend(" + std::to_string(a.lock_pid()) + ")");
  append_courses(5, 5);
  // The next owner (b, or a under a new epoch) goes on while the stalled
  // handler still waits.
  auto running = [&](projector_host& h) {
    auto s = local(h, "course_seats");
    return s && s->state == projector_state::running && s->position >= head();
  };
  ASSERT_TRUE(eventually(
    [&] {
      return running(a) || running(b);
    },
    30s));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 15s);
  std::cout
    << "[          ] takeover past a stalled batch: "
    << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
    << " ms\n";
  release->set_value();
  // The stalled batch never committed: every event counted once.
  EXPECT_EQ(seats_table(), recount("-"));
}

TEST_F(ProjectorTest, BadSpecsAreRefused) {
  go();
  auto& h = host();
  auto spec = seats("bad name");
  EXPECT_THROW(h.add(spec), store_error);
  spec = seats("");
  EXPECT_THROW(h.add(spec), store_error);
  spec = seats("ok");
  spec.handle = nullptr;
  EXPECT_THROW(h.add(spec), store_error);
  spec = seats("ok");
  spec.query = query{{query_item{{}, {}}}};
  EXPECT_THROW(h.add(spec), store_error);
  spec = seats("ok");
  spec.retry.attempts = 0;
  EXPECT_THROW(h.add(spec), store_error);
  h.add(seats("ok"));
  try {
    h.add(seats("ok"));
    FAIL() << "a taken name was accepted";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument);
    EXPECT_NE(std::string{e.what()}.find("taken"), std::string::npos);
  }
  // Nothing was registered for the refused specs.
  EXPECT_EQ(
    exec_sql("SELECT string_agg(name, ',') FROM " + schema_ + ".projectors"),
    "ok");
}

} // namespace
} // namespace dcbd::test
