// DCB conformance, group R and streaming reads (see
// tests/store/conformance.hpp).
#include "tests/store/conformance.hpp"

namespace dcbd::test {
namespace {

TYPED_TEST_SUITE(Conformance, store_kinds, store_kind_names);

// -- R: robustness ------------------------------------------------------------

// R-01
TYPED_TEST(Conformance, R01PayloadsAndTagsRoundTripExactly) {
  auto& s = *this->store_;
  std::string every_byte;
  for (int c = 0; c < 256; ++c)
    every_byte.push_back(static_cast<char>(c));
  std::string nested;
  for (int i = 0; i < 200; ++i)
    nested += R"({"k":[)";
  nested += "null";
  for (int i = 0; i < 200; ++i)
    nested += "]}";
  std::string blob(100 * 1024, '\0');
  std::uint32_t state = 12345;
  for (auto& c : blob) {
    state = state * 1664525u + 1013904223u;
    c = static_cast<char>(state >> 24);
  }
  const std::vector<bytes> payloads{
    "",
    std::string("\0", 1),
    std::string("a\0b\0", 4),
    "tab\there\nnew line\r\n",
    R"(back\slash \\ \n)",
    R"("quoted" 'single' `back`)",
    R"({"a":[1,{"b":"\\u0000"}]})",
    R"({"a":"\u0000"})",
    "\xff\xfe",
    "\xc3\x28 invalid \x80",
    "unicode \xc3\xbc:\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80",
    "%s %d ; DROP TABLE events; -- $1 E'\\x'",
    every_byte,
    nested,
    blob,
  };
  std::vector<event> events;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    // The metadata is the payload of another slot, so both columns carry
    // every kind of payload.
    events.push_back(ev("Payload", {"slot:" + std::to_string(i)}, payloads[i],
                        payloads[payloads.size() - 1 - i]));
  }
  const str_list special_tags{
    "\xc3\xbc:\xc3\x9f",
    "a\"b",
    "x\\y",
    "{}",
    "a,b",
    "NULL",
    "with space",
    "'q'",
    "it's",
    "(p)",
    "[s]",
    "%_*?",
    "tab\tx",
    "line\nbreak",
    "=",
    "::",
    "null",
    "\xe2\x82\xac",
    "{\"k\":1}",
  };
  events.push_back(ev("Tags \"quoted\" \xc3\xbc", special_tags, "tags"));
  events.push_back(ev("Tags", {"b", "a", "b"}, "a and b"));
  events.push_back(ev("Tags", {"x", "y"}, "x and y"));
  const auto n = events.size();
  ASSERT_EQ(s.append(events), n);
  auto r = s.read(query::all());
  ASSERT_EQ(r.events.size(), n);
  for (std::size_t i = 0; i < n; ++i) {
    SCOPED_TRACE("event " + std::to_string(i + 1));
    expect_event(r.events[i], i + 1, events[i]);
  }
  // Special tags also work as query terms, and only match themselves.
  const auto special_pos = payloads.size() + 1;
  for (const auto& tag : special_tags) {
    SCOPED_TRACE("tag " + tag);
    EXPECT_EQ(read_positions(s, q_tags({tag})), (pos_list{special_pos}));
  }
  EXPECT_EQ(read_positions(s, q_tags({"a"})), (pos_list{special_pos + 1}));
  EXPECT_EQ(read_positions(s, q_tags({"a", "b"})), (pos_list{special_pos + 1}));
  EXPECT_EQ(read_positions(s, q_tags({"x"})), (pos_list{special_pos + 2}));
  EXPECT_EQ(read_positions(s, q_types({"Tags \"quoted\" \xc3\xbc"})),
            (pos_list{special_pos}));
  EXPECT_EQ(read_positions(s, q_tags(special_tags)), (pos_list{special_pos}));
  // And in conditions.
  expect_condition_failed(s, {ev("N")}, cond(q_tags({"a,b"})));
  expect_condition_failed(s, {ev("N")},
                          cond(q_tags({"NULL"}), special_pos - 1));
  EXPECT_EQ(s.append({ev("N")}, cond(q_tags({"NULL"}), special_pos)), n + 1);
}

// R-02: data is bytea, so malformed JSON and JSON with \u0000 are accepted.
TYPED_TEST(Conformance, R02NonJsonDataIsAccepted) {
  auto& s = *this->store_;
  const std::vector<event> events{
    ev("T", {}, "{not json", "[1,"),
    ev("T", {}, R"({"a":"\u0000"})", R"({"m":"\u0000"})"),
    ev("T", {}, std::string("{\"a\":\"\0\"}", 9), "plain text"),
  };
  ASSERT_EQ(s.append(events), 3u);
  auto r = s.read(query::all());
  ASSERT_EQ(r.events.size(), 3u);
  for (std::size_t i = 0; i < events.size(); ++i)
    expect_event(r.events[i], i + 1, events[i]);
}

// R-03
TYPED_TEST(Conformance, R03ThousandTagsRoundTrip) {
  auto& s = *this->store_;
  str_list tags;
  // Generated out of order, to check that they come back sorted.
  for (int i = 999; i >= 0; --i)
    tags.push_back("tag:" + std::to_string(i * 7919 % 1000));
  auto e = ev("ManyTags", tags, "data");
  ASSERT_EQ(s.append({e}), 1u);
  auto r = s.read(query::all());
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].event.tags.size(), 1000u);
  expect_event(r.events[0], 1, e);
  EXPECT_EQ(read_positions(s, q_tags({"tag:0", "tag:999", "tag:500"})),
            (pos_list{1}));
  EXPECT_EQ(read_positions(s, q_tags(tags)), (pos_list{1}));
}

// R-03
TYPED_TEST(Conformance, R03TenThousandEventsAppendAtomically) {
  auto& s = *this->store_;
  constexpr std::size_t n = 10'000;
  std::vector<event> events;
  events.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    events.push_back(ev(i % 2 == 0 ? "Even" : "Odd",
                        {"batch:1", "i:" + std::to_string(i)},
                        "payload " + std::to_string(i)));
  ASSERT_EQ(s.append(events), n);
  EXPECT_EQ(s.head(), n);
  auto r = s.read(query::all());
  ASSERT_EQ(r.events.size(), n);
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_EQ(r.events[i].position, i + 1);
    ASSERT_EQ(r.events[i].event.data, events[i].data);
  }
  EXPECT_EQ(read_positions(s, q_tags({"i:9999"})), (pos_list{n}));
  EXPECT_EQ(s.read(q_types({"Odd"})).events.size(), n / 2);
}

// R-03
TYPED_TEST(Conformance, R03FailingLargeConditionalAppendLeavesStoreUnchanged) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Guard", {"scope:x"})}), 1u);
  std::vector<event> events;
  for (std::size_t i = 0; i < 10'000; ++i)
    events.push_back(ev("Big", {"scope:x", "i:" + std::to_string(i)}));
  expect_condition_failed(s, events, cond(q_tags({"scope:x"}), 0));
  EXPECT_EQ(s.head(), 1u);
  EXPECT_TRUE(s.read(q_types({"Big"})).events.empty());
  // The same batch goes in once the condition holds, right after the guard.
  EXPECT_EQ(s.append(events, cond(q_tags({"scope:x"}), 1)), 10'001u);
}

// R-04
TYPED_TEST(Conformance, R04EventMatchingTwoItemsCountsOnceTowardLimit) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("T", {"a", "b"}), ev("T", {"a", "b"}), ev("T", {"a"}),
                      ev("U", {"b"})}),
            4u);
  auto by_tags = any_of({tags_item({"a"}), tags_item({"b"})});
  EXPECT_EQ(read_positions(s, by_tags), (pos_list{1, 2, 3, 4}));
  EXPECT_EQ(read_positions(s, by_tags, fwd({}, 2)), (pos_list{1, 2}));
  EXPECT_EQ(read_positions(s, by_tags, fwd({}, 3)), (pos_list{1, 2, 3}));
  EXPECT_EQ(read_positions(s, by_tags, bwd({}, 2)), (pos_list{4, 3}));
  auto type_or_tag = any_of({types_item({"T"}), tags_item({"a"})});
  EXPECT_EQ(read_positions(s, type_or_tag), (pos_list{1, 2, 3}));
  EXPECT_EQ(read_positions(s, type_or_tag, fwd({}, 2)), (pos_list{1, 2}));
  auto same_twice = any_of({tags_item({"a", "b"}), tags_item({"b", "a"})});
  EXPECT_EQ(read_positions(s, same_twice, fwd({}, 2)), (pos_list{1, 2}));
  EXPECT_EQ(read_positions(s, same_twice, fwd(2, 5)), (pos_list{2}));
}

// R-05
TYPED_TEST(Conformance, R05ReadsDoNotInterfereAndSeeGrowingPrefixes) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto first = s.read(query::all());
  auto second = s.read(query::all());
  expect_same_events(second.events, first.events);
  auto filtered = s.read(q_tags({"baz:foos"}));
  auto again = s.read(query::all());
  expect_same_events(again.events, first.events);
  EXPECT_EQ(data_of(filtered), (str_list{"a", "d", "e", "f"}));

  auto previous = s.read(query::all());
  auto previous_filtered = s.read(q_tags({"odd"}));
  for (int i = 0; i < 20; ++i) {
    str_list tags{"round:" + std::to_string(i)};
    if (i % 2 == 1)
      tags.push_back("odd");
    ASSERT_EQ(s.append({ev("R", tags), ev("R", tags)}),
              static_cast<std::uint64_t>(6 + 2 * (i + 1)));
    auto now = s.read(query::all());
    auto now_filtered = s.read(q_tags({"odd"}));
    ASSERT_EQ(now.events.size(), previous.events.size() + 2);
    EXPECT_EQ(now.head, now.events.size());
    std::vector<sequenced_event> prefix(
      now.events.begin(),
      now.events.begin() + static_cast<std::ptrdiff_t>(previous.events.size()));
    expect_same_events(prefix, previous.events);
    ASSERT_GE(now_filtered.events.size(), previous_filtered.events.size());
    std::vector<sequenced_event> filtered_prefix(
      now_filtered.events.begin(),
      now_filtered.events.begin()
        + static_cast<std::ptrdiff_t>(previous_filtered.events.size()));
    expect_same_events(filtered_prefix, previous_filtered.events);
    auto p = positions(now);
    EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
    EXPECT_EQ(std::adjacent_find(p.begin(), p.end()), p.end());
    previous = std::move(now);
    previous_filtered = std::move(now_filtered);
  }
  EXPECT_EQ(previous_filtered.events.size(), 20u);
}

// R-05: concurrent readers each see a growing, gap-free prefix.
TYPED_TEST(Conformance, R05ConcurrentReadersSeeConsistentPrefixes) {
  auto& s = *this->store_;
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<int> started{0};
  auto reader = [&] {
    std::size_t seen = 0;
    ++started;
    while (!done.load()) {
      auto r = s.read(query::all());
      auto n = r.events.size();
      bool ok = n >= seen && r.head == n;
      for (std::size_t i = 0; ok && i < n; ++i)
        ok = r.events[i].position == i + 1
             && r.events[i].event.data == std::to_string(i + 1);
      if (!ok)
        ++bad;
      seen = n;
    }
  };
  std::thread r1(reader);
  std::thread r2(reader);
  while (started.load() < 2)
    std::this_thread::yield();
  for (std::uint64_t i = 1; i <= 60; ++i)
    EXPECT_EQ(s.append({ev("C", {}, std::to_string(i))}), i);
  done = true;
  r1.join();
  r2.join();
  EXPECT_EQ(bad.load(), 0);
}

// R-06: PostgreSQL only.
TYPED_TEST(Conformance, R06InstallIsIdempotentAndSchemasAreIsolated) {
  if constexpr (std::is_same_v<TypeParam, pg_store_factory>) {
    auto& s = *this->store_;
    const auto& schema = this->factory_.schema;
    ASSERT_NO_FATAL_FAILURE(append_f1(s));
    EXPECT_EQ(install_schema(test_config(schema)), schema_version());
    {
      pg_event_store second{test_config(schema)};
      EXPECT_EQ(second.head(), 6u);
      expect_same_events(second.read(query::all()).events,
                         s.read(query::all()).events);
      EXPECT_EQ(second.append({ev("FromSecond")}), 7u);
    }
    EXPECT_EQ(s.head(), 7u);
    EXPECT_EQ(read_positions(s, q_types({"FromSecond"})), (pos_list{7}));

    // A store on another schema sees nothing of this one, and vice versa.
    struct schema_guard {
      std::string name;
      ~schema_guard() {
        drop_schema(name);
      }
    } other{unique_schema()};
    {
      pg_event_store isolated{test_config(other.name)};
      EXPECT_EQ(isolated.head(), 0u);
      EXPECT_TRUE(isolated.read(query::all()).events.empty());
      EXPECT_EQ(isolated.append({ev("Elsewhere")}), 1u);
      EXPECT_EQ(read_positions(isolated, query::all()), (pos_list{1}));
    }
    EXPECT_EQ(s.head(), 7u);
    EXPECT_TRUE(s.read(q_types({"Elsewhere"})).events.empty());
  } else {
    GTEST_SKIP() << "schemas exist only in the PostgreSQL store";
  }
}

// -- streaming reads ----------------------------------------------------------

// Streaming: chunks hold at most `chunk_events` events.
TYPED_TEST(Conformance, StreamYieldsChunksOfChunkEvents) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto st = s.stream(query::all(), {}, chunking(3));
  std::vector<sequenced_event> chunk;
  ASSERT_TRUE(st->next(chunk));
  EXPECT_EQ(positions(chunk), (pos_list{1, 2, 3}));
  ASSERT_TRUE(st->next(chunk));
  EXPECT_EQ(positions(chunk), (pos_list{4, 5, 6}));
  EXPECT_FALSE(st->next(chunk));
  EXPECT_TRUE(chunk.empty());
  EXPECT_FALSE(st->next(chunk));
  EXPECT_EQ(st->head(), 6u);
}

// Streaming: the concatenated chunks equal `read` for the same arguments.
TYPED_TEST(Conformance, StreamConcatenationEqualsRead) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  ASSERT_NO_FATAL_FAILURE(append_f3(s));
  const std::vector<std::pair<query, read_options>> cases{
    {query::all(), {}},
    {query::all(), bwd()},
    {query::all(), fwd(4)},
    {query::all(), bwd(9)},
    {query::all(), fwd({}, 5)},
    {query::all(), fwd(3, 7)},
    {query::all(), bwd(12, 4)},
    {query::all(), fwd({}, 0)},
    {query::all(), fwd(100)},
    {query::all(), bwd(100)},
    {query::all(), bwd(0)},
    {q_tags({"foo:bar"}), {}},
    {q_tags({"foo:bar"}), fwd(5, 3)},
    {q_tags({"baz:foos"}), bwd(10, 3)},
    {q_types({"SomeEventType", "Type2"}), bwd()},
    {any_of({tags_item({"foo:bar"}), item({"Type2", "Type1"}, {"foo:bar"})}),
     fwd(2, 6)},
    {q_types({"Nothing"}), {}},
  };
  const std::vector<std::size_t> chunkings{1, 2, 5, 1000};
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const auto& [q, o] = cases[i];
    auto expected = s.read(q, o);
    for (std::size_t chunk_events : chunkings) {
      SCOPED_TRACE("chunk_events " + std::to_string(chunk_events));
      auto st = s.stream(q, o, chunking(chunk_events));
      std::vector<std::size_t> sizes;
      auto got = drain(*st, &sizes);
      expect_same_events(got, expected.events);
      EXPECT_EQ(st->head(), expected.head);
      for (auto size : sizes) {
        EXPECT_GE(size, 1u);
        EXPECT_LE(size, chunk_events);
      }
    }
  }
}

// Streaming: `chunk_bytes` bounds chunks too, but a chunk holds at least one
// event.
TYPED_TEST(Conformance, StreamChunkBytesYieldsOneEventPerChunk) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto st = s.stream(query::all(), {}, chunking(100, 1));
  std::vector<std::size_t> sizes;
  auto got = drain(*st, &sizes);
  EXPECT_EQ(sizes, (std::vector<std::size_t>(6, 1)));
  EXPECT_EQ(positions(got), (pos_list{1, 2, 3, 4, 5, 6}));
}

// Streaming: a stream is capped at the head when it started; events appended
// while iterating (or before the first chunk) are not delivered.
TYPED_TEST(Conformance, StreamHeadStaysAtStartHead) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto before_first = s.stream(query::all(), {}, chunking(2));
  auto backwards = s.stream(query::all(), bwd(), chunking(2));
  auto st = s.stream(query::all(), {}, chunking(2));
  std::vector<sequenced_event> chunk;
  ASSERT_TRUE(st->next(chunk));
  EXPECT_EQ(positions(chunk), (pos_list{1, 2}));
  EXPECT_EQ(s.append({ev("Late1"), ev("Late2")}), 8u);
  ASSERT_TRUE(st->next(chunk));
  EXPECT_EQ(positions(chunk), (pos_list{3, 4}));
  EXPECT_EQ(s.append({ev("Late3")}), 9u);
  EXPECT_EQ(positions(drain(*st)), (pos_list{5, 6}));
  EXPECT_EQ(st->head(), 6u);
  EXPECT_EQ(positions(drain(*before_first)), (pos_list{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(before_first->head(), 6u);
  EXPECT_EQ(positions(drain(*backwards)), (pos_list{6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(backwards->head(), 6u);
  // A new stream sees the late events.
  auto fresh = s.stream(query::all(), fwd(7), {});
  EXPECT_EQ(positions(drain(*fresh)), (pos_list{7, 8, 9}));
  EXPECT_EQ(fresh->head(), 9u);
}

// Streaming: a stream on an empty store ends at once with head 0.
TYPED_TEST(Conformance, StreamOnEmptyStoreEndsAtOnce) {
  auto& s = *this->store_;
  auto st = s.stream(query::all());
  std::vector<sequenced_event> chunk;
  EXPECT_FALSE(st->next(chunk));
  EXPECT_TRUE(chunk.empty());
  EXPECT_EQ(st->head(), 0u);
}

} // namespace
} // namespace dcbd::test
