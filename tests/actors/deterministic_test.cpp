// Actors on CAF's deterministic test coordinator over the in-memory store:
// exact group sizes and exact supervision, with no threads and no timing.
#include "actors/pool.hpp"
#include "actors/store_protocol.hpp"
#include "actors/types.hpp"
#include "store/memory_store.hpp"
#include "store/validation.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/send.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

namespace dcbd::test {
namespace {

using worker_atom = caf::atom_constant<caf::atom("tWorker")>;

// The deterministic fixture (STYLE §2a): nothing runs until `sched.run()`.
class Deterministic : public ::testing::Test {
public:
  static caf::actor_system_config& init(caf::actor_system_config& cfg) {
    register_types(cfg);
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    return cfg;
  }

  Deterministic()
    : sys(init(cfg))
    , sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {
    // nop
  }

  ~Deterministic() override {
    sched.run(); // drain, or ~actor_system waits forever
  }

  // Sends `xs...` to `dest` from a fresh actor; the reply lands in the
  // returned slot once the scheduler has run.
  template <class T, class Handle, class... Ts>
  std::shared_ptr<std::optional<caf::expected<T>>>
  request(const Handle& dest, Ts... xs) {
    auto slot = std::make_shared<std::optional<caf::expected<T>>>();
    sys.spawn([=](caf::event_based_actor* self) {
      self->request(dest, caf::infinite, xs...)
        .then(
          [slot](T& x) {
            *slot = std::move(x);
          },
          [slot](caf::error& err) {
            *slot = caf::expected<T>{std::move(err)};
          });
    });
    return slot;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
};

validated_append tagged(const std::string& tag) {
  return validate_append(append_request{{event{"E", {tag}, "d", {}}}, {}},
                         limits{});
}

store_stats stats_of(Deterministic& t, const store_actor& store) {
  auto s = t.request<store_stats>(store, stats_atom::value);
  t.sched.run();
  EXPECT_TRUE(s->has_value() && **s);
  return ***s;
}

TEST_F(Deterministic, StoreCommitsEverythingInItsMailboxAsOneGroup) {
  auto mem = std::make_shared<memory_event_store>();
  auto store = spawn_store(sys, mem, group_limits{}, nullptr,
                           spawn_mode::scheduled);
  std::vector<std::shared_ptr<std::optional<caf::expected<append_ack>>>> acks;
  for (int i = 0; i < 5; ++i)
    acks.push_back(request<append_ack>(store, append_atom::value,
                                       tagged("k:" + std::to_string(i))));
  sched.run();
  for (std::size_t i = 0; i < acks.size(); ++i) {
    ASSERT_TRUE(acks[i]->has_value()) << "request " << i << " unanswered";
    ASSERT_TRUE(**acks[i]) << message_of((**acks[i]).error());
    EXPECT_EQ((**acks[i])->last_position, i + 1);
  }
  auto st = stats_of(*this, store);
  EXPECT_EQ(st.groups, 1u);
  EXPECT_EQ(st.max_group, 5u);
  EXPECT_EQ(st.appended, 5u);
  EXPECT_EQ(mem->head(), 5u);
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
}

TEST_F(Deterministic, StoreCutsGroupsAtTheRequestBound) {
  auto mem = std::make_shared<memory_event_store>();
  group_limits limits;
  limits.max_requests = 2;
  auto store = spawn_store(sys, mem, limits, nullptr, spawn_mode::scheduled);
  for (int i = 0; i < 5; ++i)
    request<append_ack>(store, append_atom::value,
                        tagged("k:" + std::to_string(i)));
  sched.run();
  auto st = stats_of(*this, store);
  EXPECT_EQ(st.groups, 3u) << "2 + 2 + 1";
  EXPECT_EQ(st.max_group, 2u);
  EXPECT_EQ(st.appended, 5u);
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
}

// Answers of appends sent with a callback, by slot.
struct callback_answers {
  std::vector<std::optional<caf::expected<append_ack>>> slots;

  static std::shared_ptr<callback_answers> make(std::size_t n) {
    auto a = std::make_shared<callback_answers>();
    a->slots.resize(n);
    return a;
  }
};

append_callback_ptr answer_into(std::shared_ptr<callback_answers> a,
                                std::size_t i) {
  return std::make_shared<append_callback>([a, i](caf::expected<append_ack> r) {
    a->slots[i] = std::move(r);
  });
}

TEST_F(Deterministic, StoreAnswersCallbacksAfterTheCommitOfTheirGroup) {
  auto mem = std::make_shared<memory_event_store>();
  auto store = spawn_store(sys, mem, group_limits{}, nullptr,
                           spawn_mode::scheduled);
  auto answers = callback_answers::make(2);
  auto ack = request<append_ack>(store, append_atom::value, tagged("k:0"));
  sched.run_once(); // the requester, so that its request joins the group
  caf::anon_send(store, append_atom::value, tagged("k:1"),
                 answer_into(answers, 0));
  caf::anon_send(store, append_atom::value, tagged("k:2"),
                 answer_into(answers, 1));
  EXPECT_FALSE(answers->slots[0].has_value());
  sched.run();
  ASSERT_TRUE(ack->has_value() && **ack);
  std::vector<std::uint64_t> positions{(**ack)->last_position};
  for (std::size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(answers->slots[i].has_value()) << "callback " << i;
    ASSERT_TRUE(*answers->slots[i]) << message_of(answers->slots[i]->error());
    EXPECT_EQ((*answers->slots[i])->first_position,
              (*answers->slots[i])->last_position);
    positions.push_back((*answers->slots[i])->last_position);
  }
  // The callbacks in the order sent, the request anywhere among them.
  EXPECT_LT(positions[1], positions[2]);
  std::sort(positions.begin(), positions.end());
  EXPECT_EQ(positions, (std::vector<std::uint64_t>{1, 2, 3}));
  auto st = stats_of(*this, store);
  EXPECT_EQ(st.groups, 1u) << "requests and callbacks share a group";
  EXPECT_EQ(st.appended, 3u);
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
}

TEST_F(Deterministic, StoreAnswersCallbacksOverloadedAndUnavailable) {
  auto mem = std::make_shared<memory_event_store>();
  group_limits limits;
  limits.max_queue = 1;
  auto store = spawn_store(sys, mem, limits, nullptr, spawn_mode::scheduled);
  auto answers = callback_answers::make(3);
  // The first sees the second behind it in the mailbox: the queue is full.
  caf::anon_send(store, append_atom::value, tagged("k:0"),
                 answer_into(answers, 0));
  caf::anon_send(store, append_atom::value, tagged("k:1"),
                 answer_into(answers, 1));
  sched.run();
  ASSERT_TRUE(answers->slots[0].has_value());
  ASSERT_FALSE(*answers->slots[0]);
  EXPECT_EQ(code_of(answers->slots[0]->error()), errc::overloaded);
  ASSERT_TRUE(answers->slots[1].has_value());
  EXPECT_TRUE(*answers->slots[1]);
  // A stopped store never takes the message: the callback still answers.
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
  sched.run();
  caf::anon_send(store, append_atom::value, tagged("k:2"),
                 answer_into(answers, 2));
  sched.run();
  ASSERT_TRUE(answers->slots[2].has_value());
  ASSERT_FALSE(*answers->slots[2]);
  EXPECT_EQ(code_of(answers->slots[2]->error()), errc::unavailable);
  EXPECT_EQ(mem->head(), 1u);
}

TEST_F(Deterministic, StoreCountsConflictsOfOneGroupSerially) {
  auto mem = std::make_shared<memory_event_store>();
  auto store = spawn_store(sys, mem, group_limits{}, nullptr,
                           spawn_mode::scheduled);
  query q{{query_item{{}, {"k:1"}}}};
  auto first = request<append_ack>(
    store, append_atom::value,
    validate_append(append_request{{event{"E", {"k:1"}, "", {}}},
                                   append_condition{q, 0}},
                    limits{}));
  auto second = request<append_ack>(
    store, append_atom::value,
    validate_append(append_request{{event{"E", {"k:1"}, "", {}}},
                                   append_condition{q, 0}},
                    limits{}));
  sched.run();
  ASSERT_TRUE(first->has_value() && second->has_value());
  EXPECT_TRUE(**first);
  ASSERT_FALSE(**second);
  EXPECT_EQ(code_of((**second).error()), errc::append_condition_failed);
  auto st = stats_of(*this, store);
  EXPECT_EQ(st.groups, 1u);
  EXPECT_EQ(st.conflicts, 1u);
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
}

// A worker that answers with its number.
caf::behavior numbered_worker(caf::event_based_actor*, int n) {
  return {
    [n](worker_atom) {
      return n;
    },
  };
}

TEST_F(Deterministic, PoolRoundRobinsAndReplacesADeadWorker) {
  auto made = std::make_shared<int>(0);
  auto pool = spawn_pool(
    sys, "worker",
    [this, made] {
      return sys.spawn(numbered_worker, (*made)++);
    },
    2);
  sched.run();
  std::vector<int> seen;
  for (int i = 0; i < 4; ++i) {
    auto r = request<int>(pool, worker_atom::value);
    sched.run();
    ASSERT_TRUE(r->has_value() && **r);
    seen.push_back(***r);
  }
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 0, 1}));
  auto workers = request<std::vector<caf::actor>>(pool, caf::sys_atom::value,
                                                  caf::get_atom::value);
  sched.run();
  ASSERT_TRUE(workers->has_value() && **workers);
  ASSERT_EQ((***workers).size(), 2u);
  caf::anon_send_exit((***workers)[0], caf::exit_reason::kill);
  sched.run();
  EXPECT_EQ(*made, 3) << "the dead worker is replaced";
  std::vector<int> after;
  for (int i = 0; i < 2; ++i) {
    auto r = request<int>(pool, worker_atom::value);
    sched.run();
    ASSERT_TRUE(r->has_value() && **r);
    after.push_back(***r);
  }
  std::sort(after.begin(), after.end());
  EXPECT_EQ(after, (std::vector<int>{1, 2}));
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_F(Deterministic, PoolWithoutWorkersAnswersUnavailableThenRecovers) {
  auto up = std::make_shared<bool>(false);
  auto pool = spawn_pool(
    sys, "reader",
    [this, up]() -> caf::actor {
      if (!*up)
        throw std::runtime_error("database down");
      return sys.spawn(numbered_worker, 7);
    },
    1);
  sched.run();
  auto r = request<int>(pool, worker_atom::value);
  sched.run();
  ASSERT_TRUE(r->has_value());
  ASSERT_FALSE(**r);
  EXPECT_EQ(code_of((**r).error()), errc::unavailable);
  EXPECT_NE(message_of((**r).error()).find("no reader"), std::string::npos);
  // The pool retries every second; the retry is a delayed message.
  *up = true;
  EXPECT_TRUE(sched.trigger_timeout());
  sched.run();
  auto again = request<int>(pool, worker_atom::value);
  sched.run();
  ASSERT_TRUE(again->has_value() && **again);
  EXPECT_EQ(***again, 7);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

} // namespace
} // namespace dcbd::test
