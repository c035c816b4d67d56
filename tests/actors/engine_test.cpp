// The embedding API end to end: blocking and asynchronous calls.
#include "tests/support/engine_fixture.hpp"

#include <gtest/gtest.h>

#include <future>

namespace dcbd::test {
namespace {

event make(std::string type, std::vector<std::string> tags) {
  return event{std::move(type), std::move(tags), "d", {}};
}

class Engine : public EngineTest {};

TEST_F(Engine, AppendThenReadBlocking) {
  auto& eng = start();
  auto ack = eng.append({make("A", {"k:1"}), make("B", {"k:2"})});
  ASSERT_TRUE(ack) << message_of(ack.error());
  EXPECT_EQ(ack->first_position, 1u);
  EXPECT_EQ(ack->last_position, 2u);
  auto r = eng.read(query{{query_item{{}, {"k:2"}}}});
  ASSERT_TRUE(r) << message_of(r.error());
  ASSERT_EQ(r->events.size(), 1u);
  EXPECT_EQ(r->events[0].position, 2u);
  EXPECT_EQ(r->head, 2u);
  auto h = eng.head();
  ASSERT_TRUE(h);
  EXPECT_EQ(*h, 2u);
}

TEST_F(Engine, ConditionalAppendConflictIsTypedError) {
  auto& eng = start();
  ASSERT_TRUE(eng.append({make("A", {"k:1"})}));
  auto q = query{{query_item{{"A"}, {}}}};
  auto r = eng.append({make("A", {"k:1"})}, append_condition{q, 0});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::append_condition_failed);
  auto ok = eng.append({make("A", {"k:1"})}, append_condition{q, 1});
  ASSERT_TRUE(ok) << message_of(ok.error());
  EXPECT_EQ(ok->last_position, 2u);
}

TEST_F(Engine, AsyncAppendCallsBack) {
  auto& eng = start();
  std::promise<caf::expected<append_ack>> p;
  eng.append({make("A", {"k:1"})}, std::nullopt,
             [&](caf::expected<append_ack> r) {
               p.set_value(std::move(r));
             });
  auto r = p.get_future().get();
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_EQ(r->last_position, 1u);
}

TEST_F(Engine, StreamDeliversEverythingInOrder) {
  auto& eng = start();
  std::vector<event> evs;
  for (int i = 0; i < 250; ++i)
    evs.push_back(make("A", {"k:" + std::to_string(i % 3)}));
  ASSERT_TRUE(eng.append(evs));
  std::vector<std::uint64_t> seen;
  stream_options chunking;
  chunking.chunk_events = 40;
  auto s = eng.stream(
    query::all(), {},
    [&](std::vector<sequenced_event>& c) {
      for (auto& e : c)
        seen.push_back(e.position);
    },
    2, chunking);
  ASSERT_TRUE(s) << message_of(s.error());
  EXPECT_EQ(s->head, 250u);
  EXPECT_EQ(s->events, 250u);
  ASSERT_EQ(seen.size(), 250u);
  for (std::size_t i = 0; i < seen.size(); ++i)
    EXPECT_EQ(seen[i], i + 1);
}

} // namespace
} // namespace dcbd::test
