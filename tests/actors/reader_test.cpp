// A reader actor against the real PostgreSQL: bounded reads, streams under
// credit flow control (cancel, dying sinks, invalid queries), projection of
// decision models, and the head.
#include "tests/support/engine_fixture.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace dcbd::test {
namespace {

event make(std::string type, std::vector<std::string> tags, std::string data) {
  return event{std::move(type), std::move(tags), std::move(data), {}};
}

// What a sink got next: a chunk, the end, or nothing within the timeout.
struct sink_message {
  enum kind_t { none, chunk, end } kind = none;
  stream_chunk c;
  stream_end e;
  caf::actor from;
};

sink_message next_message(caf::scoped_actor& self,
                          std::chrono::milliseconds timeout) {
  sink_message m;
  self->receive(
    [&](chunk_atom, stream_chunk& c) {
      m.kind = sink_message::chunk;
      m.c = std::move(c);
      m.from = caf::actor_cast<caf::actor>(self->current_sender());
    },
    [&](end_atom, stream_end& e) {
      m.kind = sink_message::end;
      m.e = std::move(e);
      m.from = caf::actor_cast<caf::actor>(self->current_sender());
    },
    caf::after(timeout) >> [] {});
  return m;
}

constexpr std::chrono::milliseconds long_wait{10'000};
constexpr std::chrono::milliseconds quiet{300};

// A reader spawned directly (no supervisor: if it died, requests would fail).
class Reader : public EngineTest {
protected:
  void SetUp() override {
    EngineTest::SetUp();
    writer_ = open_store(1);
  }

  void TearDown() override {
    stop_actor(*sys_, reader_);
    reader_ = reader_actor{};
    writer_.reset();
    EngineTest::TearDown();
  }

  reader_actor spawn(std::size_t max_read_events = 10'000) {
    reader_config cfg;
    cfg.max_read_events = max_read_events;
    cfg.project_chunking.chunk_events = 2;
    reader_ = spawn_reader(*sys_, open_store(1), cfg);
    return reader_;
  }

  // Appends `n` events of type "E" tagged "k:<i % 3>" with data "<i>".
  void append_numbered(int n) {
    std::vector<event> evs;
    for (int i = 1; i <= n; ++i)
      evs.push_back(
        make("E", {"k:" + std::to_string(i % 3)}, std::to_string(i)));
    writer_->append(std::move(evs));
  }

  caf::expected<read_result> read(query q, read_options options = {}) {
    return ask<read_result>(*sys_, reader_, read_atom::value, std::move(q),
                            options);
  }

  caf::expected<std::uint64_t> head() {
    return ask<std::uint64_t>(*sys_, reader_, head_atom::value);
  }

  caf::expected<projection> project(std::vector<projector> ps) {
    return ask<projection>(
      *sys_, reader_, project_atom::value,
      decision_model{
        std::make_shared<const std::vector<projector>>(std::move(ps))});
  }

  // Opens a stream of every event to `sink`.
  void open(caf::scoped_actor& sink, std::uint64_t id, std::uint32_t window,
            std::size_t chunk_events, query q = query::all()) {
    stream_request req;
    req.id = id;
    req.q = std::move(q);
    req.window = window;
    req.chunking.chunk_events = chunk_events;
    sink->send(reader_, stream_atom::value, std::move(req),
               caf::actor_cast<caf::actor>(sink));
  }

  // Consumes a stream with ample credit; returns its end (kind none on a
  // stall) and the positions received.
  sink_message drain(caf::scoped_actor& sink, std::uint64_t id,
                     std::vector<std::uint64_t>& positions) {
    for (;;) {
      auto m = next_message(sink, long_wait);
      if (m.kind != sink_message::chunk)
        return m;
      EXPECT_EQ(m.c.id, id);
      for (auto& e : m.c.events)
        positions.push_back(e.position);
      sink->send(m.from, credit_atom::value, id, std::uint32_t{1});
    }
  }

  std::unique_ptr<pg_event_store> writer_;
  reader_actor reader_;
};

TEST_F(Reader, ReadIsBoundedByMaxReadEvents) {
  spawn(10);
  append_numbered(15);
  auto all = read(query::all());
  ASSERT_FALSE(all) << "a 15-event result exceeds max_read_events = 10";
  EXPECT_EQ(code_of(all.error()), errc::invalid_argument);
  EXPECT_NE(message_of(all.error()).find("10"), std::string::npos)
    << message_of(all.error());
  read_options over;
  over.limit = 11;
  auto too_many = read(query::all(), over);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(code_of(too_many.error()), errc::invalid_argument);

  read_options limited;
  limited.limit = 10;
  auto first = read(query::all(), limited);
  ASSERT_TRUE(first) << message_of(first.error());
  ASSERT_EQ(first->events.size(), 10u);
  EXPECT_EQ(first->events.front().position, 1u);
  EXPECT_EQ(first->events.back().position, 10u);
  EXPECT_EQ(first->head, 15u);
  limited.from = 6;
  auto rest = read(query::all(), limited);
  ASSERT_TRUE(rest) << message_of(rest.error());
  ASSERT_EQ(rest->events.size(), 10u);
  EXPECT_EQ(rest->events.front().position, 6u);
  EXPECT_EQ(rest->events.back().position, 15u);

  // Exactly max_read_events without a limit: 10 events of k:1 or k:2.
  auto ten = read(query{{query_item{{}, {"k:1"}}, query_item{{}, {"k:2"}}}});
  ASSERT_TRUE(ten) << message_of(ten.error());
  EXPECT_EQ(ten->events.size(), 10u);
  auto five = read(query{{query_item{{}, {"k:0"}}}});
  ASSERT_TRUE(five) << message_of(five.error());
  EXPECT_EQ(five->events.size(), 5u);
}

TEST_F(Reader, StreamSendsAtMostWindowChunksUntilCreditArrives) {
  spawn();
  append_numbered(60);
  caf::scoped_actor sink{*sys_};
  constexpr std::uint32_t window = 3;
  constexpr std::uint64_t id = 7;
  open(sink, id, window, 4); // 15 chunks of 4
  std::vector<stream_chunk> chunks;
  caf::actor reader;
  for (std::uint32_t i = 0; i < window; ++i) {
    auto m = next_message(sink, long_wait);
    ASSERT_EQ(m.kind, sink_message::chunk) << "chunk " << i;
    reader = m.from;
    chunks.push_back(std::move(m.c));
  }
  // The window is used up: nothing more arrives without credit.
  auto stalled = next_message(sink, quiet);
  EXPECT_EQ(stalled.kind, sink_message::none)
    << "the reader sent beyond its window of " << window;
  if (stalled.kind == sink_message::chunk)
    chunks.push_back(std::move(stalled.c));

  // Credit in batches of 2, as chunks are consumed.
  std::uint64_t credited = 0;
  std::uint64_t max_outstanding = chunks.size();
  stream_end end;
  bool ended = false;
  while (!ended) {
    auto consumed = chunks.size() - credited;
    if (consumed >= 2 || consumed == window) {
      sink->send(reader, credit_atom::value, id, std::uint32_t{2});
      credited += 2;
    }
    auto m = next_message(sink, long_wait);
    ASSERT_NE(m.kind, sink_message::none)
      << "stalled after " << chunks.size() << " chunks, " << credited
      << " credited";
    if (m.kind == sink_message::end) {
      end = std::move(m.e);
      ended = true;
    } else {
      chunks.push_back(std::move(m.c));
      max_outstanding = std::max<std::uint64_t>(max_outstanding,
                                                chunks.size() - credited);
    }
  }
  EXPECT_LE(max_outstanding, window);
  EXPECT_EQ(max_outstanding, window);
  EXPECT_EQ(end.id, id);
  EXPECT_EQ(end.code, errc::none) << end.message;
  EXPECT_EQ(end.head, 60u);
  EXPECT_EQ(end.events, 60u);
  ASSERT_EQ(chunks.size(), 15u);
  std::uint64_t expected = 1;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].id, id);
    EXPECT_EQ(chunks[i].seq, i);
    EXPECT_EQ(chunks[i].events.size(), 4u);
    for (auto& e : chunks[i].events) {
      EXPECT_EQ(e.position, expected);
      EXPECT_EQ(e.event.data, std::to_string(expected));
      ++expected;
    }
  }
  // Exactly one end, then silence.
  EXPECT_EQ(next_message(sink, quiet).kind, sink_message::none);
}

TEST_F(Reader, CancelledStreamEndsOnceAndSendsNothingMore) {
  spawn();
  append_numbered(40);
  caf::scoped_actor sink{*sys_};
  constexpr std::uint64_t id = 3;
  open(sink, id, 2, 4); // 10 chunks of 4
  auto first = next_message(sink, long_wait);
  ASSERT_EQ(first.kind, sink_message::chunk);
  auto second = next_message(sink, long_wait);
  ASSERT_EQ(second.kind, sink_message::chunk);
  sink->send(first.from, cancel_atom::value, id);
  // Credit for a cancelled stream is ignored.
  sink->send(first.from, credit_atom::value, id, std::uint32_t{10});
  // Chunks sent before the cancel may still arrive; then exactly one end.
  auto m = next_message(sink, long_wait);
  while (m.kind == sink_message::chunk) {
    EXPECT_LT(m.c.seq, 2u) << "chunk " << m.c.seq << " after the cancel";
    m = next_message(sink, long_wait);
  }
  ASSERT_EQ(m.kind, sink_message::end);
  EXPECT_EQ(m.e.id, id);
  EXPECT_EQ(m.e.code, errc::none);
  EXPECT_EQ(m.e.message, "cancelled by the sink");
  EXPECT_EQ(next_message(sink, quiet).kind, sink_message::none);
  // The id is free again, and the reader serves the same sink in full.
  open(sink, id, 4, 8);
  std::vector<std::uint64_t> positions;
  auto end = drain(sink, id, positions);
  ASSERT_EQ(end.kind, sink_message::end);
  EXPECT_EQ(end.e.code, errc::none) << end.e.message;
  EXPECT_EQ(end.e.events, 40u);
  ASSERT_EQ(positions.size(), 40u);
  EXPECT_EQ(positions.front(), 1u);
  EXPECT_EQ(positions.back(), 40u);
}

TEST_F(Reader, SinkThatDiesMidStreamIsDroppedAndReaderKeepsServing) {
  spawn();
  append_numbered(40);
  // A sink that quits on its first chunk without granting credit.
  caf::scoped_actor watcher{*sys_};
  auto dying = sys_->spawn([](caf::event_based_actor* self) -> caf::behavior {
    return {
      [self](chunk_atom, const stream_chunk&) {
        self->quit();
      },
      [](end_atom, const stream_end&) {},
    };
  });
  watcher->monitor(dying);
  stream_request req;
  req.id = 1;
  req.q = query::all();
  req.window = 2;
  req.chunking.chunk_events = 1;
  watcher->send(reader_, stream_atom::value, req, dying);
  bool down = false;
  watcher->receive(
    [&](const caf::down_msg&) {
      down = true;
    },
    caf::after(long_wait) >> [] {});
  ASSERT_TRUE(down) << "the sink never got a chunk";
  dying = caf::actor{};

  // The reader still answers, and streams to others, including a sink that
  // reuses the dead sink's stream id.
  auto h = head();
  ASSERT_TRUE(h) << message_of(h.error());
  EXPECT_EQ(*h, 40u);
  caf::scoped_actor sink{*sys_};
  open(sink, 1, 2, 16);
  std::vector<std::uint64_t> positions;
  auto end = drain(sink, 1, positions);
  ASSERT_EQ(end.kind, sink_message::end);
  EXPECT_EQ(end.e.code, errc::none) << end.e.message;
  EXPECT_EQ(positions.size(), 40u);
  auto r = read(query::all());
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_EQ(r->events.size(), 40u);
}

TEST_F(Reader, StreamWithInvalidQueryEndsWithInvalidArgument) {
  spawn();
  append_numbered(5);
  caf::scoped_actor sink{*sys_};
  open(sink, 9, 2, 4, query{{query_item{}}});
  auto m = next_message(sink, long_wait);
  ASSERT_EQ(m.kind, sink_message::end) << "expected the end, not a chunk";
  EXPECT_EQ(m.e.id, 9u);
  EXPECT_EQ(m.e.code, errc::invalid_argument);
  EXPECT_FALSE(m.e.message.empty());
  EXPECT_EQ(m.e.events, 0u);
  // The same id can be used again: the failed stream was closed.
  open(sink, 9, 2, 4);
  std::vector<std::uint64_t> positions;
  auto end = drain(sink, 9, positions);
  ASSERT_EQ(end.kind, sink_message::end);
  EXPECT_EQ(end.e.code, errc::none) << end.e.message;
  EXPECT_EQ(positions.size(), 5u);
}

TEST_F(Reader, ProjectFoldsEventsAndReturnsUnionConditionAtHead) {
  spawn();
  writer_->append({make("A", {"k:1"}, "1"), make("B", {"k:1"}, "2"),
                   make("A", {"k:2"}, "3"), make("C", {"k:3"}, "4"),
                   make("B", {"k:2"}, "5"), make("Z", {"other"}, "6")});
  auto q_a = query{{query_item{{"A"}, {}}}};
  auto q_k1 = query{{query_item{{}, {"k:1"}}}};
  // Overlaps the first query: the union lists {A} once.
  auto q_bca = query{
    {query_item{{"B"}, {}}, query_item{{"C"}, {}}, query_item{{"A"}, {}}}};
  std::vector<projector> ps;
  ps.push_back(
    make_projector("count_a", q_a, 0, [](int& n, const sequenced_event&) {
      ++n;
    }));
  ps.push_back(make_projector(
    "k1_positions", q_k1, std::vector<std::uint64_t>{},
    [](std::vector<std::uint64_t>& xs, const sequenced_event& e) {
      xs.push_back(e.position);
    }));
  ps.push_back(make_projector("abc_data", q_bca, std::string{},
                              [](std::string& s, const sequenced_event& e) {
                                s += e.event.data;
                              }));
  auto r = project(ps);
  ASSERT_TRUE(r) << message_of(r.error());
  ASSERT_TRUE(r->states);
  EXPECT_EQ(r->states->size(), 3u);
  EXPECT_EQ(r->states->get<int>("count_a"), 2);
  EXPECT_EQ(r->states->get<std::vector<std::uint64_t>>("k1_positions"),
            (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(r->states->get<std::string>("abc_data"), "12345");
  EXPECT_EQ(r->head, 6u);
  EXPECT_EQ(r->events_read, 5u);
  ASSERT_TRUE(r->condition);
  EXPECT_EQ(r->condition->fail_if_events_match,
            (query{{query_item{{"A"}, {}}, query_item{{}, {"k:1"}},
                    query_item{{"B"}, {}}, query_item{{"C"}, {}}}}));
  ASSERT_TRUE(r->condition->after);
  EXPECT_EQ(*r->condition->after, 6u);
  // The condition protects the decision: an unrelated event appended since
  // does not invalidate it, an event the model would have seen does.
  writer_->append({make("Z", {"other"}, "7")});
  EXPECT_NO_THROW(writer_->append({make("Y", {}, "8")}, r->condition));
  writer_->append({make("D", {"k:1"}, "9")});
  try {
    writer_->append({make("Y", {}, "10")}, r->condition);
    ADD_FAILURE() << "the condition missed an event matching the model";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::append_condition_failed) << e.what();
  }
}

TEST_F(Reader,
       ThrowingProjectorFailsWithInternalNamingItAndReaderKeepsWorking) {
  spawn();
  append_numbered(6);
  std::vector<projector> ps;
  ps.push_back(
    make_projector("fine", query::all(), 0, [](int& n, const sequenced_event&) {
      ++n;
    }));
  ps.push_back(make_projector("boom", query{{query_item{{}, {"k:2"}}}}, 0,
                              [](int&, const sequenced_event&) {
                                throw std::runtime_error("kaput");
                              }));
  auto r = project(ps);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::internal);
  auto msg = message_of(r.error());
  EXPECT_NE(msg.find("boom"), std::string::npos) << msg;
  EXPECT_NE(msg.find("kaput"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("'fine'"), std::string::npos) << msg;

  auto h = head();
  ASSERT_TRUE(h) << message_of(h.error());
  EXPECT_EQ(*h, 6u);
  ps.pop_back();
  auto ok = project(ps);
  ASSERT_TRUE(ok) << message_of(ok.error());
  EXPECT_EQ(ok->states->get<int>("fine"), 6);
  ASSERT_TRUE(ok->condition);
  EXPECT_TRUE(ok->condition->fail_if_events_match.matches_all());
  EXPECT_EQ(ok->condition->after, std::optional<std::uint64_t>{6});
}

TEST_F(Reader, EmptyModelGivesNoConditionAndMissingProjectorsAreInvalid) {
  spawn();
  append_numbered(3);
  auto r = project({});
  ASSERT_TRUE(r) << message_of(r.error());
  ASSERT_TRUE(r->states);
  EXPECT_EQ(r->states->size(), 0u);
  EXPECT_FALSE(r->condition);
  auto none = ask<projection>(*sys_, reader_, project_atom::value,
                              decision_model{});
  ASSERT_FALSE(none);
  EXPECT_EQ(code_of(none.error()), errc::invalid_argument);
  std::vector<projector> dup;
  dup.push_back(
    make_projector("x", query::all(), 0, [](int&, const sequenced_event&) {}));
  dup.push_back(dup.front());
  auto d = project(dup);
  ASSERT_FALSE(d);
  EXPECT_EQ(code_of(d.error()), errc::invalid_argument)
    << message_of(d.error());
}

TEST_F(Reader, HeadFollowsAppends) {
  spawn();
  auto h = head();
  ASSERT_TRUE(h) << message_of(h.error());
  EXPECT_EQ(*h, 0u);
  append_numbered(3);
  h = head();
  ASSERT_TRUE(h) << message_of(h.error());
  EXPECT_EQ(*h, 3u);
  writer_->append({make("E", {}, "x"), make("E", {}, "y")});
  h = head();
  ASSERT_TRUE(h) << message_of(h.error());
  EXPECT_EQ(*h, 5u);
}

} // namespace
} // namespace dcbd::test
