// DCB conformance: the cases of /work/shared/dcb-conformance.md (groups S,
// W, WU, U, K-01..K-19, R) plus streaming reads, as typed tests over the
// in-memory and the PostgreSQL store.
//
// Conversions to our conventions (DESIGN §2): `read_options::from` is
// inclusive (backwards: the inclusive maximum), so a forward `after=p` is
// `from=p+1` and a backwards `after=p` is `from=p-1`; positions are gap-free
// from 1, so exact numbers are asserted; the empty item list means ALL.

#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/model.hpp"
#include "tests/support/pg_fixture.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <source_location>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace dcbd::test {
namespace {

// -- helpers ------------------------------------------------------------------

using pos_list = std::vector<std::uint64_t>;
using str_list = std::vector<std::string>;

/// Builds an event.
event ev(std::string type, str_list tags = {}, bytes data = {},
         bytes metadata = {}) {
  return event{std::move(type), std::move(tags), std::move(data),
               std::move(metadata)};
}

/// Builds a query item matching any of `types` with all of `tags`.
query_item item(str_list types, str_list tags) {
  return query_item{std::move(types), std::move(tags)};
}

/// Builds a query item on types only.
query_item types_item(str_list types) {
  return item(std::move(types), {});
}

/// Builds a query item on tags only.
query_item tags_item(str_list tags) {
  return item({}, std::move(tags));
}

/// Builds the query that ORs `items`.
query any_of(std::vector<query_item> items) {
  return query{std::move(items)};
}

/// Builds a one-item query on types only.
query q_types(str_list types) {
  return any_of({types_item(std::move(types))});
}

/// Builds a one-item query on tags only.
query q_tags(str_list tags) {
  return any_of({tags_item(std::move(tags))});
}

/// Builds a one-item query on types and tags.
query q_item(str_list types, str_list tags) {
  return any_of({item(std::move(types), std::move(tags))});
}

/// Forward read options: from `from` (inclusive) on, at most `limit` events.
read_options fwd(std::optional<std::uint64_t> from = {},
                 std::optional<std::uint64_t> limit = {}) {
  read_options result;
  result.from = from;
  result.limit = limit;
  return result;
}

/// Backwards read options: from `from` (inclusive maximum; absent means the
/// head) down, at most `limit` events.
read_options bwd(std::optional<std::uint64_t> from = {},
                 std::optional<std::uint64_t> limit = {}) {
  auto result = fwd(from, limit);
  result.backwards = true;
  return result;
}

/// Stream chunking of at most `events` events and about `bytes` bytes.
stream_options chunking(std::size_t events,
                        std::size_t bytes = stream_options{}.chunk_bytes) {
  stream_options result;
  result.chunk_events = events;
  result.chunk_bytes = bytes;
  return result;
}

/// Builds an append condition; absent `after` means the whole log.
append_condition cond(query q, std::optional<std::uint64_t> after = {}) {
  return append_condition{std::move(q), after};
}

/// Returns `tags` as the store reports them: sorted and de-duplicated.
str_list sorted(str_list tags) {
  std::sort(tags.begin(), tags.end());
  tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
  return tags;
}

/// Returns the positions of `events`, in result order.
pos_list positions(const std::vector<sequenced_event>& events) {
  pos_list result;
  for (const auto& e : events)
    result.push_back(e.position);
  return result;
}

/// Returns the positions of a read result, in result order.
pos_list positions(const read_result& r) {
  return positions(r.events);
}

/// Returns the types of a read result, in result order.
str_list types_of(const read_result& r) {
  str_list result;
  for (const auto& e : r.events)
    result.push_back(e.event.type);
  return result;
}

/// Returns the data of a read result, in result order (fixtures use the
/// data as the event's label).
str_list data_of(const read_result& r) {
  str_list result;
  for (const auto& e : r.events)
    result.push_back(e.event.data);
  return result;
}

/// Reads `q` with `options` and returns the positions.
pos_list read_positions(event_store& s, const query& q,
                        const read_options& options = {}) {
  return positions(s.read(q, options));
}

/// Reads `q` with `options` and returns the data labels.
str_list read_data(event_store& s, const query& q,
                   const read_options& options = {}) {
  return data_of(s.read(q, options));
}

/// Returns the number of events in the store.
std::size_t count_events(event_store& s) {
  return s.read(query::all()).events.size();
}

/// Expects `actual` to be `expected` at `position`, comparing tags as sets.
void expect_event(const sequenced_event& actual, std::uint64_t position,
                  const event& expected,
                  std::source_location loc = std::source_location::current()) {
  ::testing::ScopedTrace trace(loc.file_name(), static_cast<int>(loc.line()),
                               "expect_event");
  EXPECT_EQ(actual.position, position);
  EXPECT_EQ(actual.event.type, expected.type);
  EXPECT_EQ(actual.event.tags, sorted(expected.tags));
  EXPECT_EQ(actual.event.data, expected.data);
  EXPECT_EQ(actual.event.metadata, expected.metadata);
}

/// Expects two event lists to be identical, field by field.
void expect_same_events(const std::vector<sequenced_event>& actual,
                        const std::vector<sequenced_event>& expected,
                        std::source_location loc
                        = std::source_location::current()) {
  ::testing::ScopedTrace trace(loc.file_name(), static_cast<int>(loc.line()),
                               "expect_same_events");
  ASSERT_EQ(positions(actual), positions(expected));
  for (std::size_t i = 0; i < actual.size(); ++i) {
    EXPECT_TRUE(actual[i].recorded_at == expected[i].recorded_at)
      << "recorded_at differs at position " << actual[i].position;
    EXPECT_TRUE(actual[i].event == expected[i].event)
      << "event differs at position " << actual[i].position;
  }
}

/// Expects `append(events, condition)` to fail with
/// `append_condition_failed` and to leave the store unchanged.
void expect_condition_failed(event_store& s, std::vector<event> events,
                             std::optional<append_condition> condition,
                             std::source_location loc
                             = std::source_location::current()) {
  ::testing::ScopedTrace trace(loc.file_name(), static_cast<int>(loc.line()),
                               "expect_condition_failed");
  const auto head = s.head();
  const auto count = count_events(s);
  try {
    const auto pos = s.append(std::move(events), std::move(condition));
    ADD_FAILURE() << "append succeeded, last position " << pos;
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::append_condition_failed)
      << to_string(e.code()) << ": " << e.what();
    EXPECT_STRNE(e.what(), "");
  }
  EXPECT_EQ(s.head(), head);
  EXPECT_EQ(count_events(s), count);
}

/// Expects `fn()` to throw `store_error` with `invalid_argument` and to
/// leave the store unchanged.
template <class F>
void expect_invalid(event_store& s, F&& fn,
                    std::source_location loc
                    = std::source_location::current()) {
  ::testing::ScopedTrace trace(loc.file_name(), static_cast<int>(loc.line()),
                               "expect_invalid");
  const auto head = s.head();
  const auto count = count_events(s);
  try {
    fn();
    ADD_FAILURE() << "no store_error thrown";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument)
      << to_string(e.code()) << ": " << e.what();
  }
  EXPECT_EQ(s.head(), head);
  EXPECT_EQ(count_events(s), count);
}

/// Drains `st`; returns all its events and, if `sizes`, the chunk sizes.
std::vector<sequenced_event> drain(event_stream& st,
                                   std::vector<std::size_t>* sizes = nullptr) {
  std::vector<sequenced_event> all;
  std::vector<sequenced_event> chunk;
  while (st.next(chunk)) {
    if (sizes)
      sizes->push_back(chunk.size());
    all.insert(all.end(), chunk.begin(), chunk.end());
  }
  EXPECT_TRUE(chunk.empty()) << "exhausted stream left a non-empty chunk";
  return all;
}

// -- fixtures of dcb-conformance.md -------------------------------------------

/// The metadata of every F1 event.
constexpr const char* f1_metadata = R"({"foo":"bar"})";

/// The events of fixture F1 (data = label a..f, positions 1..6).
std::vector<event> f1_events() {
  return {
    ev("SomeEventType", {"baz:foos", "foo:bar"}, "a", f1_metadata),
    ev("SomeOtherEventType", {"foo:bar"}, "b", f1_metadata),
    ev("SomeEventType", {"foo:bar"}, "c", f1_metadata),
    ev("SomeThirdEventType", {"baz:foos", "foo:bar"}, "d", f1_metadata),
    ev("SomeEventType", {"baz:foos", "foo:bar"}, "e", f1_metadata),
    ev("SomeOtherEventType", {"baz:foos", "foo:bar"}, "f", f1_metadata),
  };
}

/// Appends fixture F1 in one call (positions 1..6 on an empty store).
void append_f1(event_store& s) {
  const auto head = s.head();
  ASSERT_EQ(s.append(f1_events()), head + 6);
}

/// Appends fixture F2 (8 SomeEventType events, data "") in one call
/// (positions 1..8 on an empty store).
void append_f2(event_store& s) {
  std::vector<event> events{
    ev("SomeEventType", {"foo:bar"}),
    ev("SomeEventType", {"foo:bar", "baz:foos"}),
    ev("SomeEventType", {"baz:foos", "foo:bar"}),
    ev("SomeEventType", {"baz:foos"}),
    ev("SomeEventType", {"baz:foosnot"}),
    ev("SomeEventType", {"foo:bar", "baz:notfoos"}),
    ev("SomeEventType", {"baz:foos", "foo:bar", "foos:baz"}),
    ev("SomeEventType", {"baz:foosn", "foo:notbar", "foos:bar"}),
  };
  const auto head = s.head();
  ASSERT_EQ(s.append(std::move(events)), head + 8);
}

/// Appends fixture F3 (data = label a..h) in one call (positions 1..8 on an
/// empty store).
void append_f3(event_store& s) {
  std::vector<event> events{
    ev("Type1", {"foo:bar"}, "a"),
    ev("Type2", {"foo:bar", "baz:foos"}, "b"),
    ev("Type3", {"baz:foos", "foo:bar"}, "c"),
    ev("Type1", {"baz:foos"}, "d"),
    ev("Type2", {"baz:foosnot"}, "e"),
    ev("Type2", {"foo:bar", "baz:notfoos"}, "f"),
    ev("Type1", {"baz:foos", "foo:bar", "foos:baz"}, "g"),
    ev("Type3", {"baz:foosn", "foo:notbar", "foos:bar"}, "h"),
  };
  const auto head = s.head();
  ASSERT_EQ(s.append(std::move(events)), head + 8);
}

/// Appends `n` events of type "Event<i>" (i from 1), each in its own call.
void append_numbered(event_store& s, int n) {
  for (int i = 1; i <= n; ++i)
    ASSERT_EQ(s.append({ev("Event" + std::to_string(i))}),
              static_cast<std::uint64_t>(i));
}

// -- the U script (UmaDB) -----------------------------------------------------

/// Events and queries of the U script.
struct u_script {
  event e1 = ev("type1", {"tagX"}, "data1",
                R"([["source","integration-test"],)"
                R"(["correlation_id","abc-123"]])");
  event e2 = ev("type2", {"tagA", "tagB"}, "data2");
  event e3 = ev("type3", {"tagA", "tagC"}, "data3");
  event n = ev("type4", {}, "data4");

  query q1 = q_types({"type1"});
  query q2 = q_types({"type2"});
  query qx = q_tags({"tagX"});
  query qy = q_tags({"tagY"});
  query q1x = q_item({"type1"}, {"tagX"});
  query q1y = q_item({"type1"}, {"tagY"});
  query q2x = q_item({"type2"}, {"tagX"});
  query qa = q_tags({"tagA"});
  query qab = q_tags({"tagA", "tagB"});
  query qb_or_c = any_of({tags_item({"tagB"}), tags_item({"tagC"})});
  query qx_or_y = any_of({tags_item({"tagX"}), tags_item({"tagY"})});
  query q2a = q_item({"type2"}, {"tagA"});
  query q2b3c = any_of({item({"type2"}, {"tagB"}), item({"type3"}, {"tagC"})});
  query q3c2b = any_of({item({"type3"}, {"tagC"}), item({"type2"}, {"tagB"})});

  // Phase 5: unique student and course tags.
  std::string student = "student1-6f1c2a";
  std::string course = "course1-93be07";
  event sr = ev("StudentRegistered", {student},
                R"({"name":"Student1","max_courses":10})");
  event cr = ev("CourseRegistered", {course},
                R"({"name":"Course1","places":10})");
  event sj = ev("StudentJoinedCourse", {course, student},
                R"({"student":"Student1","course":"Course1"})");
};

/// The one instance of the U script's events and queries.
const u_script& u() {
  static const u_script script;
  return script;
}

/// One conditional append of the U script (U-20..U-41).
struct u_step {
  int id;
  std::vector<event> events;
  std::optional<append_condition> condition;
  /// Expected last position; 0 means the condition must fail.
  std::uint64_t expected;
};

/// The appends of phases 3 to 5, in script order.
const std::vector<u_step>& u_steps() {
  static const std::vector<u_step> steps = [] {
    const auto& x = u();
    const std::vector<event> n{x.n};
    return std::vector<u_step>{
      {20, n, cond(query::all()), 0},
      {21, n, cond(query::all(), 1), 0},
      {22, n, cond(x.q1), 0},
      {23, n, cond(x.q2, 1), 0},
      {24, n, cond(x.qx), 0},
      {25, n, cond(x.qa, 1), 0},
      {26, n, cond(x.q1x), 0},
      {27, n, cond(x.q2a, 1), 0},
      {28, n, cond(x.qab), 0},
      {29, n, cond(x.qb_or_c), 0},
      {30, n, cond(x.qx_or_y), 0},
      {31, n, cond(x.q2b3c), 0},
      {32, n, std::nullopt, 4},
      {33, n, cond(q_types({"typeN"})), 5},
      {34, n, cond(x.qy), 6},
      {35, n, cond(x.q1, 1), 7},
      {36, n, cond(x.qx, 1), 8},
      {37, n, cond(x.q1x, 1), 9},
      {38, n, cond(x.qx, 1), 10},
      {39, {x.sr}, cond(q_item({"StudentRegistered"}, {x.student}), 3), 11},
      {40, {x.cr}, cond(q_tags({x.course}), 3), 12},
      {41, {x.sj}, cond(q_tags({x.course, x.student}), 3), 13},
    };
  }();
  return steps;
}

/// Runs U-script step `id` and checks its outcome.
void u_run(event_store& s, int id) {
  for (const auto& step : u_steps()) {
    if (step.id != id)
      continue;
    SCOPED_TRACE("U-" + std::to_string(id));
    if (step.expected == 0) {
      ASSERT_NO_FATAL_FAILURE(
        expect_condition_failed(s, step.events, step.condition));
    } else {
      ASSERT_EQ(s.append(step.events, step.condition), step.expected);
    }
    return;
  }
  FAIL() << "no U step " << id;
}

/// Replays the U script on a fresh store up to, not including, case `until`.
void u_replay(event_store& s, int until) {
  if (until > 2) {
    ASSERT_EQ(s.append({u().e1}), 1u);
  }
  if (until > 7) {
    ASSERT_EQ(s.append({u().e2, u().e3}), 3u);
  }
  for (const auto& step : u_steps()) {
    if (step.id < until) {
      ASSERT_NO_FATAL_FAILURE(u_run(s, step.id));
    }
  }
}

// -- K fixtures (@dcb-es) -----------------------------------------------------

/// `testEvent1(v)` of the K cases.
event test_event1(const std::string& v = "default") {
  return ev("testEvent1", {"testTagKey=" + v}, "{}");
}

/// The query `{types:[testEvent1], tags:[testTagKey=v]}`.
query test_event1_scope(const std::string& v = "default") {
  return q_item({"testEvent1"}, {"testTagKey=" + v});
}

/// Appends K-11's three events e1, e2, e3 in separate calls.
void append_k11(event_store& s) {
  ASSERT_EQ(s.append({ev("testEvent1", {"testTagKey=tag-key-1"}, "e1")}), 1u);
  ASSERT_EQ(s.append({ev("testEvent2", {"testTagKey=tag-key-2"}, "e2")}), 2u);
  ASSERT_EQ(s.append({ev("testEvent2", {"testTagKey=ev-3"}, "e3")}), 3u);
}

// -- the typed suite ----------------------------------------------------------

template <class Factory>
class Conformance : public StoreTest<Factory> {};

TYPED_TEST_SUITE(Conformance, store_kinds, store_kind_names);

// -- S: the specification -----------------------------------------------------

// S-01
TYPED_TEST(Conformance, S01QueryItemSemantics) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({
              ev("EventType1", {}),
              ev("EventType3", {"tag1"}),
              ev("EventType3", {"tag1", "tag3"}),
              ev("X", {"tag2", "tag1", "tag9"}),
              ev("EventType4", {"tag1", "tag3"}),
              ev("EventType3", {"tag3"}),
            }),
            6u);
  auto q = any_of({
    types_item({"EventType1", "EventType2"}),
    tags_item({"tag1", "tag2"}),
    item({"EventType2", "EventType3"}, {"tag1", "tag3"}),
  });
  EXPECT_EQ(read_positions(s, q), (pos_list{1, 3, 4}));
}

// S-02
TYPED_TEST(Conformance, S02AllQueryReturnsEveryEventInPositionOrder) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("A")}), 1u);
  ASSERT_EQ(s.append({ev("B"), ev("C")}), 3u);
  auto r = s.read(query::all());
  EXPECT_EQ(positions(r), (pos_list{1, 2, 3}));
  EXPECT_EQ(types_of(r), (str_list{"A", "B", "C"}));
}

// S-03
TYPED_TEST(Conformance, S03AppendOfNoEventsIsInvalid) {
  auto& s = *this->store_;
  expect_invalid(s, [&] {
    s.append({});
  });
  expect_invalid(s, [&] {
    s.append({}, cond(q_tags({"x"})));
  });
  EXPECT_EQ(s.head(), 0u);
  ASSERT_EQ(s.append({ev("A")}), 1u);
  expect_invalid(s, [&] {
    s.append({});
  });
}

// S-04
TYPED_TEST(Conformance, S04BatchIsAtomicAndVisibleAllOrNothing) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("A"), ev("B"), ev("C")}), 3u);
  auto r = s.read(query::all());
  EXPECT_EQ(positions(r), (pos_list{1, 2, 3}));
  EXPECT_EQ(types_of(r), (str_list{"A", "B", "C"}));
  // A concurrent reader must see whole batches of three only.
  constexpr int batches = 60;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    do {
      auto snapshot = s.read(query::all());
      auto n = snapshot.events.size();
      bool ok = n % 3 == 0 && snapshot.head == n;
      for (std::size_t i = 0; ok && i < n; ++i)
        ok = snapshot.events[i].position == i + 1;
      if (!ok)
        ++torn;
      ++reads;
    } while (!done.load());
  });
  // Start writing only once the reader runs, so that they overlap.
  while (reads.load() == 0)
    std::this_thread::yield();
  for (int i = 0; i < batches; ++i) {
    auto last = s.append({ev("A"), ev("B"), ev("C")});
    EXPECT_EQ(last, static_cast<std::uint64_t>(3 * (i + 2)));
  }
  done = true;
  reader.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(count_events(s), static_cast<std::size_t>(3 * (batches + 1)));
}

// S-05
TYPED_TEST(Conformance, S05ConditionWithoutAfterConsidersWholeLog) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("T", {"x"})}), 1u);
  expect_condition_failed(s, {ev("N")}, cond(q_tags({"x"})));
  EXPECT_EQ(s.append({ev("N")}, cond(q_tags({"y"}))), 2u);
}

// S-06
TYPED_TEST(Conformance, S06AfterMayExceedLastMatchingPosition) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("T", {"x"}), ev("U", {"y"})}), 2u);
  EXPECT_EQ(s.append({ev("N")}, cond(q_tags({"x"}), 2)), 3u);
}

// -- W: wwwision EventStoreTestBase -------------------------------------------

// W-01
TYPED_TEST(Conformance, W01EmptyStoreReadsNothing) {
  auto& s = *this->store_;
  auto r = s.read(query::all());
  EXPECT_TRUE(r.events.empty());
  EXPECT_EQ(r.head, 0u);
}

// W-02
TYPED_TEST(Conformance, W02ReadAllReturnsFixtureExactly) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto r = s.read(query::all());
  auto expected = f1_events();
  ASSERT_EQ(r.events.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i)
    expect_event(r.events[i], i + 1, expected[i]);
  EXPECT_EQ(r.head, 6u);
}

// W-03: a read result is a value; reading twice gives identical results.
TYPED_TEST(Conformance, W03ReadingTwiceGivesIdenticalResults) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto first = s.read(query::all());
  auto second = s.read(query::all());
  expect_same_events(second.events, first.events);
  EXPECT_EQ(second.head, first.head);
  EXPECT_EQ(first.events.front().event.data, "a");
}

// W-04
TYPED_TEST(Conformance, W04FromIsInclusive) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, query::all(), fwd(4)), (str_list{"d", "e", "f"}));
}

// W-05
TYPED_TEST(Conformance, W05LimitCutsForwardRead) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, query::all(), fwd({}, 3)), (str_list{"a", "b", "c"}));
}

// W-06
TYPED_TEST(Conformance, W06FromBeyondHeadReadsNothing) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_TRUE(s.read(query::all(), fwd(123)).events.empty());
}

// W-07
TYPED_TEST(Conformance, W07TagQueryFiltersEvents) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, q_tags({"baz:foos"})), (str_list{"a", "d", "e", "f"}));
}

// W-08
TYPED_TEST(Conformance, W08TagsInSeparateItemsAreOred) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f2(s));
  auto q = any_of({tags_item({"foo:bar"}), tags_item({"baz:foos"})});
  EXPECT_EQ(read_positions(s, q), (pos_list{1, 2, 3, 4, 6, 7}));
}

// W-09
TYPED_TEST(Conformance, W09TagsInOneItemAreAnded) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f2(s));
  EXPECT_EQ(read_positions(s, q_tags({"foo:bar", "baz:foos"})),
            (pos_list{2, 3, 7}));
}

// W-10
TYPED_TEST(Conformance, W10TypesInOneItemAreOred) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, q_types({"SomeEventType", "SomeOtherEventType"})),
            (str_list{"a", "b", "c", "e", "f"}));
}

// W-11
TYPED_TEST(Conformance, W11SingleTypeQuery) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, q_types({"SomeEventType"})),
            (str_list{"a", "c", "e"}));
}

// W-12
TYPED_TEST(Conformance, W12TypeAndTagInOneItemAreAnded) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, q_item({"SomeEventType"}, {"baz:foos"})),
            (str_list{"a", "e"}));
}

// W-13
TYPED_TEST(Conformance, W13UnknownTypeMatchesNothing) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto r = s.read(q_types({"NonExistingEventType"}));
  EXPECT_TRUE(r.events.empty());
  EXPECT_EQ(r.head, 6u);
}

// W-14
TYPED_TEST(Conformance, W14BackwardsReadsNewestFirst) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, query::all(), bwd()),
            (str_list{"f", "e", "d", "c", "b", "a"}));
}

// W-15
TYPED_TEST(Conformance, W15BackwardsFromIsInclusiveMaximum) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, query::all(), bwd(4)), (str_list{"d", "c", "b", "a"}));
}

// W-16
TYPED_TEST(Conformance, W16LimitCutsBackwardsRead) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, query::all(), bwd({}, 3)), (str_list{"f", "e", "d"}));
}

// W-17
TYPED_TEST(Conformance, W17BackwardsFromOneReadsFirstEvent) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  EXPECT_EQ(read_data(s, query::all(), bwd(1)), (str_list{"a"}));
}

// W-18
TYPED_TEST(Conformance, W18ReadOptionsDoNotAffectMatching) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f3(s));
  auto q
    = any_of({tags_item({"foo:bar"}), item({"Type2", "Type1"}, {"foo:bar"})});
  EXPECT_EQ(read_data(s, q), (str_list{"a", "b", "c", "f", "g"}));
  EXPECT_EQ(read_data(s, q, bwd()), (str_list{"g", "f", "c", "b", "a"}));
  EXPECT_EQ(read_data(s, q, fwd(3)), (str_list{"c", "f", "g"}));
  EXPECT_EQ(read_data(s, q, bwd(3)), (str_list{"c", "b", "a"}));
}

// W-19
TYPED_TEST(Conformance, W19AppendSucceedsWhenAfterEqualsLastMatchingPosition) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto q = q_item({"SomeEventType"}, {"baz:foos"});
  auto last = s.read(q, bwd({}, 1));
  ASSERT_EQ(positions(last), (pos_list{5}));
  ASSERT_EQ(data_of(last), (str_list{"e"}));
  EXPECT_EQ(s.append({ev("SomeEventType", {"baz:foos"}, "new event")},
                     cond(q, last.events.front().position)),
            7u);
  EXPECT_EQ(read_data(s, q), (str_list{"a", "e", "new event"}));
}

// W-20
TYPED_TEST(Conformance, W20ConditionAfterBeyondHeadOnEmptyStoreSucceeds) {
  auto& s = *this->store_;
  auto q = q_item({"SomeEventTypeThatDidNotOccur"}, {"baz:foos"});
  EXPECT_EQ(s.append({ev("SomeEventType", {}, "new event")}, cond(q, 123)), 1u);
  EXPECT_EQ(read_data(s, query::all()), (str_list{"new event"}));
}

// W-21
TYPED_TEST(Conformance, W21AppendFailsWhenMatchingEventArrivedAfterRead) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto q = q_tags({"baz:foos"});
  auto last = s.read(q, bwd({}, 1));
  ASSERT_EQ(positions(last), (pos_list{6}));
  ASSERT_EQ(s.append({ev("SomeEventType", {"baz:foos"})}), 7u);
  expect_condition_failed(s, {ev("DoesNotMatter")}, cond(q, 6));
  EXPECT_EQ(s.head(), 7u);
}

// W-22
TYPED_TEST(Conformance, W22AppendFailsWithoutAfterWhenQueryMatches) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  expect_condition_failed(s, {ev("DoesNotMatter")},
                          cond(q_item({"SomeEventType"}, {"baz:foos"})));
  EXPECT_EQ(s.head(), 6u);
}

// W-23, W-24, W-25 (onlyLastEvent) and W-28 (recordedAt with a fixed clock)
// are extensions our model does not have: not covered.

// W-26: a read is a snapshot; appends made after it returned (or while a
// stream over it is iterated) do not show up in it.
TYPED_TEST(Conformance, W26ReadIsSnapshotUnaffectedByLaterAppends) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_f1(s));
  auto r = s.read(query::all());
  auto st = s.stream(query::all(), {}, chunking(3));
  std::vector<sequenced_event> chunk;
  ASSERT_TRUE(st->next(chunk));
  ASSERT_EQ(positions(chunk), (pos_list{1, 2, 3}));
  ASSERT_EQ(s.append({
              ev("SomeEventType", {"foo:bar", "foo:baz"}, "g"),
              ev("SomeOtherEventType", {"foo:foos", "bar:baz"}, "h"),
            }),
            8u);
  auto rest = drain(*st);
  EXPECT_EQ(positions(rest), (pos_list{4, 5, 6}));
  EXPECT_EQ(st->head(), 6u);
  EXPECT_EQ(data_of(r), (str_list{"a", "b", "c", "d", "e", "f"}));
  EXPECT_EQ(r.head, 6u);
  EXPECT_EQ(read_data(s, query::all()),
            (str_list{"a", "b", "c", "d", "e", "f", "g", "h"}));
}

// W-27
TYPED_TEST(Conformance, W27MetadataRoundTrips) {
  auto& s = *this->store_;
  const std::string metadata = R"({"foo":"bar","baz":"FOOS"})";
  ASSERT_EQ(s.append({ev("SomeEventType", {}, "", metadata)}), 1u);
  auto r = s.read(query::all());
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].position, 1u);
  EXPECT_EQ(r.events[0].event.metadata, metadata);
}

// -- WU: wwwision unit tests --------------------------------------------------

// WU-01
TYPED_TEST(Conformance, WU01FirstEventGetsPositionOne) {
  auto& s = *this->store_;
  auto e = ev("TestEvent", {}, R"({"key":"value"})");
  ASSERT_EQ(s.append({e}), 1u);
  auto r = s.read(query::all());
  ASSERT_EQ(r.events.size(), 1u);
  expect_event(r.events[0], 1, e);
}

// WU-02
TYPED_TEST(Conformance, WU02BatchGetsConsecutivePositions) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Event1"), ev("Event2"), ev("Event3")}), 3u);
  auto r = s.read(query::all());
  EXPECT_EQ(positions(r), (pos_list{1, 2, 3}));
  EXPECT_EQ(types_of(r), (str_list{"Event1", "Event2", "Event3"}));
}

// WU-03
TYPED_TEST(Conformance, WU03ReadByType) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("TypeA"), ev("TypeB"), ev("TypeA")}), 3u);
  auto r = s.read(q_types({"TypeA"}));
  EXPECT_EQ(types_of(r), (str_list{"TypeA", "TypeA"}));
  EXPECT_EQ(positions(r), (pos_list{1, 3}));
}

// WU-04
TYPED_TEST(Conformance, WU04ReadByTag) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Event1", {"user:123"}), ev("Event2", {"user:456"}),
                      ev("Event3", {"user:123"})}),
            3u);
  EXPECT_EQ(read_positions(s, q_tags({"user:123"})), (pos_list{1, 3}));
}

// WU-05
TYPED_TEST(Conformance, WU05ReadBackwards) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_numbered(s, 3));
  EXPECT_EQ(read_positions(s, query::all(), bwd()), (pos_list{3, 2, 1}));
}

// WU-06
TYPED_TEST(Conformance, WU06ReadFrom) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_numbered(s, 4));
  EXPECT_EQ(read_positions(s, query::all(), fwd(2)), (pos_list{2, 3, 4}));
}

// WU-07
TYPED_TEST(Conformance, WU07ReadFromBackwards) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_numbered(s, 4));
  EXPECT_EQ(read_positions(s, query::all(), bwd(3)), (pos_list{3, 2, 1}));
}

// WU-08
TYPED_TEST(Conformance, WU08ReadWithLimit) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_numbered(s, 4));
  EXPECT_EQ(read_positions(s, query::all(), fwd({}, 2)), (pos_list{1, 2}));
}

// WU-09
TYPED_TEST(Conformance, WU09ReadFromWithLimitBackwards) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_numbered(s, 4));
  EXPECT_EQ(read_positions(s, query::all(), bwd(2, 2)), (pos_list{2, 1}));
}

// WU-10
TYPED_TEST(Conformance, WU10ConditionOnOtherTagSucceeds) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Event1", {"user:123"})}), 1u);
  EXPECT_EQ(s.append({ev("Event2", {"user:123"})}, cond(q_tags({"user:456"}))),
            2u);
  EXPECT_EQ(count_events(s), 2u);
}

// WU-11
TYPED_TEST(Conformance, WU11ConditionOnExistingTagFails) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Event1", {"user:123"})}), 1u);
  expect_condition_failed(s, {ev("Event2", {"user:123"})},
                          cond(q_tags({"user:123"})));
  EXPECT_EQ(count_events(s), 1u);
}

// WU-12
TYPED_TEST(Conformance, WU12ConditionIgnoresMatchesAtOrBeforeAfter) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Event1", {"user:123"}), ev("Event2", {"user:456"})}),
            2u);
  EXPECT_EQ(
    s.append({ev("Event3", {"user:123"})}, cond(q_tags({"user:123"}), 1)), 3u);
  EXPECT_EQ(count_events(s), 3u);
}

// WU-13
TYPED_TEST(Conformance, WU13ConditionFailsOnMatchAfterAfter) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Event1", {"user:123"}), ev("Event2", {"user:123"})}),
            2u);
  expect_condition_failed(s, {ev("Event3", {"user:123"})},
                          cond(q_tags({"user:123"}), 1));
  EXPECT_EQ(count_events(s), 2u);
}

// WU-14
TYPED_TEST(Conformance, WU14TypeItemOrTagItem) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("TypeA", {"tag1:value1"}),
                      ev("TypeB", {"tag2:value2"}),
                      ev("TypeA", {"tag3:value3"})}),
            3u);
  auto q = any_of({types_item({"TypeA"}), tags_item({"tag2:value2"})});
  EXPECT_EQ(read_positions(s, q), (pos_list{1, 2, 3}));
}

// WU-15
TYPED_TEST(Conformance, WU15MatchingRules) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({
              ev("SomeType", {"tag1", "tag2"}),
              ev("OtherType", {"tag1"}),
              ev("SomeType", {"tag2"}),
              ev("X", {"tag1", "tag2", "tag3"}),
              ev("X", {"tag1", "tag3"}),
            }),
            5u);
  auto typed = item({"SomeType"}, {"tag1"});
  auto tagged = tags_item({"tag1", "tag2"});
  EXPECT_EQ(read_positions(s, any_of({typed})), (pos_list{1}));
  EXPECT_EQ(read_positions(s, any_of({tagged})), (pos_list{1, 4}));
  EXPECT_EQ(read_positions(s, query::all()), (pos_list{1, 2, 3, 4, 5}));
  EXPECT_EQ(read_positions(s, any_of({typed, tagged})), (pos_list{1, 4}));
  EXPECT_EQ(read_positions(s, any_of({typed, types_item({"OtherType"})})),
            (pos_list{1, 2}));
}

// WU-16: our validation. Zero items is ALL (not invalid); an item with
// neither types nor tags is invalid, in reads and in conditions; types and
// tags are 1-255 bytes without NUL; positions must fit a signed 64-bit int.
TYPED_TEST(Conformance, WU16ValidationRejectsMalformedInput) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("T", {"x"})}), 1u);
  EXPECT_EQ(read_positions(s, query{}), (pos_list{1}));
  auto empty_item = any_of({query_item{}});
  auto mixed = any_of({tags_item({"x"}), query_item{}});
  expect_invalid(s, [&] {
    s.read(empty_item);
  });
  expect_invalid(s, [&] {
    s.read(mixed);
  });
  expect_invalid(s, [&] {
    s.append({ev("T")}, cond(empty_item));
  });
  expect_invalid(s, [&] {
    s.append({ev("T")}, cond(mixed, 0));
  });
  expect_invalid(s, [&] {
    s.append({ev("")});
  });
  expect_invalid(s, [&] {
    s.append({ev(std::string(256, 't'))});
  });
  expect_invalid(s, [&] {
    s.append({ev(std::string("a\0b", 3))});
  });
  expect_invalid(s, [&] {
    s.append({ev("T", {""})});
  });
  expect_invalid(s, [&] {
    s.append({ev("T", {std::string(256, 'g')})});
  });
  expect_invalid(s, [&] {
    s.append({ev("T", {std::string("a\0b", 3)})});
  });
  // One bad event invalidates the whole batch.
  expect_invalid(s, [&] {
    s.append({ev("Good"), ev("")});
  });
  expect_invalid(s, [&] {
    const std::uint64_t too_far = std::numeric_limits<std::int64_t>::max();
    s.read(query::all(), fwd(too_far + 1));
  });
  EXPECT_EQ(s.append({ev(std::string(255, 't'), {std::string(255, 'g')})}), 2u);
  EXPECT_EQ(read_positions(s, q_tags({std::string(255, 'g')})), (pos_list{2}));
}

// -- U: UmaDB's stateful script (each case replays the script before it) ------

// U-01
TYPED_TEST(Conformance, U01EmptyStoreHasNoHeadAndNoEvents) {
  auto& s = *this->store_;
  EXPECT_EQ(s.head(), 0u);
  EXPECT_TRUE(s.read(query::all()).events.empty());
  EXPECT_TRUE(s.read(query::all(), bwd()).events.empty());
}

// U-02
TYPED_TEST(Conformance, U02FirstAppendReturnsOneAndMovesHead) {
  auto& s = *this->store_;
  EXPECT_EQ(s.append({u().e1}), 1u);
  EXPECT_EQ(s.head(), 1u);
}

// U-03
TYPED_TEST(Conformance, U03EventRoundTripsWithMetadata) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 3));
  auto forwards = s.read(query::all());
  ASSERT_EQ(forwards.events.size(), 1u);
  expect_event(forwards.events[0], 1, u().e1);
  auto backwards = s.read(query::all(), bwd());
  ASSERT_EQ(backwards.events.size(), 1u);
  expect_event(backwards.events[0], 1, u().e1);
}

// U-04
TYPED_TEST(Conformance, U04FromBoundsOnSingleEvent) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 4));
  const auto all = query::all();
  EXPECT_EQ(read_positions(s, all, fwd(2)), pos_list{});
  EXPECT_EQ(read_positions(s, all, bwd(2)), (pos_list{1}));
  EXPECT_EQ(read_positions(s, all, bwd(1)), (pos_list{1}));
  EXPECT_EQ(read_positions(s, all, bwd(0)), pos_list{});
}

// U-05
TYPED_TEST(Conformance, U05LimitOneAndLimitZero) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 5));
  const auto all = query::all();
  EXPECT_EQ(read_positions(s, all, fwd({}, 1)), (pos_list{1}));
  EXPECT_EQ(read_positions(s, all, bwd({}, 1)), (pos_list{1}));
  EXPECT_EQ(read_positions(s, all, fwd({}, 0)), pos_list{});
  EXPECT_EQ(read_positions(s, all, bwd({}, 0)), pos_list{});
}

// U-06
TYPED_TEST(Conformance, U06TypeAndTagQueriesOnSingleEvent) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 6));
  const auto& x = u();
  for (bool backwards : {false, true}) {
    SCOPED_TRACE(backwards ? "backwards" : "forwards");
    read_options o = backwards ? bwd() : fwd();
    EXPECT_EQ(read_positions(s, x.q1, o), (pos_list{1}));
    EXPECT_EQ(read_positions(s, x.q2, o), pos_list{});
    EXPECT_EQ(read_positions(s, x.qx, o), (pos_list{1}));
    EXPECT_EQ(read_positions(s, x.qy, o), pos_list{});
    EXPECT_EQ(read_positions(s, x.q1x, o), (pos_list{1}));
    EXPECT_EQ(read_positions(s, x.q1y, o), pos_list{});
    EXPECT_EQ(read_positions(s, x.q2x, o), pos_list{});
  }
}

// U-07
TYPED_TEST(Conformance, U07BatchAppendReturnsLastPosition) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 7));
  EXPECT_EQ(s.append({u().e2, u().e3}), 3u);
  EXPECT_EQ(s.head(), 3u);
}

// U-08
TYPED_TEST(Conformance, U08ReadAllBothDirections) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 8));
  auto forwards = s.read(query::all());
  ASSERT_EQ(forwards.events.size(), 3u);
  expect_event(forwards.events[0], 1, u().e1);
  expect_event(forwards.events[1], 2, u().e2);
  expect_event(forwards.events[2], 3, u().e3);
  EXPECT_EQ(read_positions(s, query::all(), bwd()), (pos_list{3, 2, 1}));
}

// U-09
TYPED_TEST(Conformance, U09FromBothDirections) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 9));
  const auto all = query::all();
  EXPECT_EQ(read_positions(s, all, fwd(2)), (pos_list{2, 3}));
  EXPECT_EQ(read_positions(s, all, bwd(2)), (pos_list{2, 1}));
  EXPECT_EQ(read_positions(s, all, fwd(3)), (pos_list{3}));
  EXPECT_EQ(read_positions(s, all, bwd(3)), (pos_list{3, 2, 1}));
}

// U-10
TYPED_TEST(Conformance, U10FromWithLimit) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 10));
  const auto all = query::all();
  EXPECT_EQ(read_positions(s, all, fwd(2, 1)), (pos_list{2}));
  EXPECT_EQ(read_positions(s, all, bwd(2, 1)), (pos_list{2}));
}

// U-11
TYPED_TEST(Conformance, U11FromBeyondHead) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 11));
  const auto all = query::all();
  EXPECT_EQ(read_positions(s, all, fwd(11, 10)), pos_list{});
  EXPECT_EQ(read_positions(s, all, bwd(11, 10)), (pos_list{3, 2, 1}));
}

// U-12
TYPED_TEST(Conformance, U12FilteredReadsWithFrom) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 12));
  const auto& x = u();
  const read_options forwards = fwd(2);
  const read_options backwards = bwd(2);
  EXPECT_EQ(read_positions(s, x.q1, forwards), pos_list{});
  EXPECT_EQ(read_positions(s, x.q1, backwards), (pos_list{1}));
  EXPECT_EQ(read_positions(s, x.qx, forwards), pos_list{});
  EXPECT_EQ(read_positions(s, x.qx, backwards), (pos_list{1}));
  EXPECT_EQ(read_positions(s, x.qx, fwd(2, 1)), pos_list{});
  EXPECT_EQ(read_positions(s, x.qx, bwd(2, 1)), (pos_list{1}));
  EXPECT_EQ(read_positions(s, x.q1x, forwards), pos_list{});
  EXPECT_EQ(read_positions(s, x.q1x, backwards), (pos_list{1}));
}

// U-13
TYPED_TEST(Conformance, U13SingleTagMatchesSeveral) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 13));
  EXPECT_EQ(read_positions(s, u().qa), (pos_list{2, 3}));
  EXPECT_EQ(read_positions(s, u().qa, bwd()), (pos_list{3, 2}));
}

// U-14
TYPED_TEST(Conformance, U14TagsWithinItemAreAnded) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 14));
  EXPECT_EQ(read_positions(s, u().qab), (pos_list{2}));
}

// U-15
TYPED_TEST(Conformance, U15TagItemsAreOred) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 15));
  EXPECT_EQ(read_positions(s, u().qb_or_c), (pos_list{2, 3}));
  EXPECT_EQ(read_positions(s, u().qb_or_c, bwd()), (pos_list{3, 2}));
}

// U-16
TYPED_TEST(Conformance, U16UnionWithItemMatchingNothing) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 16));
  EXPECT_EQ(read_positions(s, u().qx_or_y), (pos_list{1}));
}

// U-17
TYPED_TEST(Conformance, U17TypeAndTagItemWithFrom) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 17));
  EXPECT_EQ(read_positions(s, u().q2a), (pos_list{2}));
  EXPECT_EQ(read_positions(s, u().q2a, fwd(3)), pos_list{});
  EXPECT_EQ(read_positions(s, u().q2a, bwd(3)), (pos_list{2}));
}

// U-18
TYPED_TEST(Conformance, U18TwoTypeAndTagItems) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 18));
  const auto& q = u().q2b3c;
  EXPECT_EQ(read_positions(s, q), (pos_list{2, 3}));
  EXPECT_EQ(read_positions(s, q, bwd()), (pos_list{3, 2}));
  EXPECT_EQ(read_positions(s, q, bwd({}, 1)), (pos_list{3}));
}

// U-19
TYPED_TEST(Conformance, U19ResultOrderIndependentOfItemOrder) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 19));
  const auto& q = u().q3c2b;
  EXPECT_EQ(read_positions(s, q), (pos_list{2, 3}));
  EXPECT_EQ(read_positions(s, q, bwd()), (pos_list{3, 2}));
  EXPECT_EQ(read_positions(s, q, bwd({}, 1)), (pos_list{3}));
}

// U-20
TYPED_TEST(Conformance, U20AllWithoutAfterFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 20));
  u_run(s, 20);
}

// U-21
TYPED_TEST(Conformance, U21AllAfterOneFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 21));
  u_run(s, 21);
}

// U-22
TYPED_TEST(Conformance, U22TypeWithoutAfterFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 22));
  u_run(s, 22);
}

// U-23
TYPED_TEST(Conformance, U23TypeAfterOneFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 23));
  u_run(s, 23);
}

// U-24
TYPED_TEST(Conformance, U24TagWithoutAfterFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 24));
  u_run(s, 24);
}

// U-25
TYPED_TEST(Conformance, U25TagAfterOneFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 25));
  u_run(s, 25);
}

// U-26
TYPED_TEST(Conformance, U26TypeAndTagWithoutAfterFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 26));
  u_run(s, 26);
}

// U-27
TYPED_TEST(Conformance, U27TypeAndTagAfterOneFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 27));
  u_run(s, 27);
}

// U-28
TYPED_TEST(Conformance, U28TwoTagsWithoutAfterFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 28));
  u_run(s, 28);
}

// U-29
TYPED_TEST(Conformance, U29TagItemsOredWithoutAfterFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 29));
  u_run(s, 29);
}

// U-30
TYPED_TEST(Conformance, U30UnionWithNonMatchingItemFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 30));
  u_run(s, 30);
}

// U-31
TYPED_TEST(Conformance, U31TwoTypeAndTagItemsWithoutAfterFails) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 31));
  u_run(s, 31);
}

// U-32: positions stay gap-free after the twelve failed appends.
TYPED_TEST(Conformance, U32UnconditionalAppendAfterFailuresGetsFour) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 32));
  EXPECT_EQ(s.head(), 3u);
  u_run(s, 32);
  EXPECT_EQ(s.head(), 4u);
}

// U-33
TYPED_TEST(Conformance, U33ConditionOnAbsentTypeSucceeds) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 33));
  u_run(s, 33);
}

// U-34
TYPED_TEST(Conformance, U34ConditionOnAbsentTagSucceeds) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 34));
  u_run(s, 34);
}

// U-35
TYPED_TEST(Conformance, U35TypeMatchAtAfterIsIgnored) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 35));
  u_run(s, 35);
}

// U-36
TYPED_TEST(Conformance, U36TagMatchAtAfterIsIgnored) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 36));
  u_run(s, 36);
}

// U-37
TYPED_TEST(Conformance, U37TypeAndTagMatchAtAfterIsIgnored) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 37));
  u_run(s, 37);
}

// U-38
TYPED_TEST(Conformance, U38SameConditionSucceedsRepeatedly) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 38));
  u_run(s, 38);
  EXPECT_EQ(s.head(), 10u);
}

// U-39
TYPED_TEST(Conformance, U39RegisterStudent) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 39));
  u_run(s, 39);
}

// U-40
TYPED_TEST(Conformance, U40RegisterCourse) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 40));
  u_run(s, 40);
}

// U-41: SR carries only S and CR only C, so neither matches {tags:[C,S]}.
TYPED_TEST(Conformance, U41JoinDoesNotConflictWithSingleTagEvents) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 41));
  u_run(s, 41);
}

// U-42
TYPED_TEST(Conformance, U42ReadAllAfterScript) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 42));
  const auto& x = u();
  auto forwards = s.read(query::all());
  ASSERT_EQ(forwards.events.size(), 13u);
  expect_event(forwards.events[10], 11, x.sr);
  expect_event(forwards.events[11], 12, x.cr);
  expect_event(forwards.events[12], 13, x.sj);
  auto backwards = s.read(query::all(), bwd());
  ASSERT_EQ(backwards.events.size(), 13u);
  expect_event(backwards.events[0], 13, x.sj);
  expect_event(backwards.events[1], 12, x.cr);
  expect_event(backwards.events[2], 11, x.sr);
}

// U-43
TYPED_TEST(Conformance, U43ReadByStudentAndCourseTags) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 43));
  const auto& x = u();
  const read_options backwards = bwd();
  EXPECT_EQ(read_positions(s, q_tags({x.student})), (pos_list{11, 13}));
  EXPECT_EQ(read_positions(s, q_tags({x.student}), backwards),
            (pos_list{13, 11}));
  EXPECT_EQ(read_positions(s, q_tags({x.course})), (pos_list{12, 13}));
  EXPECT_EQ(read_positions(s, q_tags({x.course}), backwards),
            (pos_list{13, 12}));
  EXPECT_EQ(read_positions(s, q_tags({x.course, x.student})), (pos_list{13}));
}

// U-44
TYPED_TEST(Conformance, U44TagReadsFromThree) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 44));
  const auto& x = u();
  const read_options forwards = fwd(3);
  const read_options backwards = bwd(3);
  EXPECT_EQ(read_positions(s, q_tags({x.student}), forwards),
            (pos_list{11, 13}));
  EXPECT_EQ(read_positions(s, q_tags({x.student}), backwards), pos_list{});
  EXPECT_EQ(read_positions(s, q_tags({x.course}), forwards),
            (pos_list{12, 13}));
  EXPECT_EQ(read_positions(s, q_tags({x.course}), backwards), pos_list{});
  EXPECT_EQ(read_positions(s, q_tags({x.course, x.student}), forwards),
            (pos_list{13}));
  EXPECT_EQ(read_positions(s, q_tags({x.course, x.student}), backwards),
            pos_list{});
}

// U-45
TYPED_TEST(Conformance, U45TagReadsWithLimitOne) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 45));
  const auto& x = u();
  const read_options forwards = fwd(3, 1);
  const read_options backwards = bwd(13, 1);
  EXPECT_EQ(read_positions(s, q_tags({x.student}), forwards), (pos_list{11}));
  EXPECT_EQ(read_positions(s, q_tags({x.student}), backwards), (pos_list{13}));
  EXPECT_EQ(read_positions(s, q_tags({x.course}), forwards), (pos_list{12}));
  EXPECT_EQ(read_positions(s, q_tags({x.course}), backwards), (pos_list{13}));
  EXPECT_EQ(read_positions(s, q_tags({x.course, x.student}), forwards),
            (pos_list{13}));
  EXPECT_EQ(read_positions(s, q_tags({x.course, x.student}), backwards),
            (pos_list{13}));
}

// U-46
TYPED_TEST(Conformance, U46DecisionModelQueryReturnsSharedEventOnce) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 46));
  const auto& x = u();
  auto q = any_of({
    item({"StudentRegistered", "StudentJoinedCourse"}, {x.student}),
    item({"CourseRegistered", "StudentJoinedCourse"}, {x.course}),
  });
  EXPECT_EQ(read_positions(s, q), (pos_list{11, 12, 13}));
  EXPECT_EQ(read_positions(s, q, bwd()), (pos_list{13, 12, 11}));
  EXPECT_EQ(s.head(), 13u);
}

// U-47: our choice differs from UmaDB's. A read always reports the head of
// its snapshot, whatever the limit or the number of results; UmaDB reports
// the last returned position when a limit is given. A caller that reads with
// a limit must not use `head` as `after` (see `read_result::head`).
TYPED_TEST(Conformance, U47ReadReportsSnapshotHeadAlways) {
  auto& s = *this->store_;
  EXPECT_EQ(s.read(query::all()).head, 0u);
  EXPECT_EQ(s.read(query::all(), fwd({}, 1)).head, 0u);
  ASSERT_NO_FATAL_FAILURE(u_replay(s, 47));
  const auto& x = u();
  const auto all = query::all();
  EXPECT_EQ(s.read(all).head, 13u);
  EXPECT_EQ(s.read(x.qy).head, 13u);
  EXPECT_EQ(s.read(all, fwd(2, 1)).head, 13u);
  EXPECT_EQ(s.read(q_tags({x.student}), fwd(3, 1)).head, 13u);
  EXPECT_EQ(s.read(all, fwd({}, 0)).head, 13u);
  EXPECT_EQ(s.read(all, fwd(20, 5)).head, 13u);
  EXPECT_EQ(s.read(all, bwd(5, 2)).head, 13u);
}

// -- K: @dcb-es (after is exclusive there; converted to inclusive from) -------

// K-01
TYPED_TEST(Conformance, K01EmptyStoreReadsNothingBothDirections) {
  auto& s = *this->store_;
  EXPECT_TRUE(s.read(query::all()).events.empty());
  EXPECT_TRUE(s.read(query::all(), bwd()).events.empty());
}

// K-02
TYPED_TEST(Conformance, K02FirstAppendReturnsPositionOne) {
  auto& s = *this->store_;
  EXPECT_EQ(s.append({test_event1()}), 1u);
  auto r = s.read(query::all());
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().position, 1u);
}

// K-03
TYPED_TEST(Conformance, K03ConditionAfterBeyondEmptyHeadSucceeds) {
  auto& s = *this->store_;
  EXPECT_EQ(s.append({test_event1()}, cond(test_event1_scope(), 1)), 1u);
}

// K-04: the failure is a distinct, typed error with a message.
TYPED_TEST(Conformance, K04ConditionFromInitialFailsWithTypedError) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({test_event1()}), 1u);
  expect_condition_failed(s, {test_event1()}, cond(test_event1_scope(), 0));
}

// K-05
TYPED_TEST(Conformance, K05ConditionOnLaterAppendedScopeFails) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({test_event1()}), 1u);
  ASSERT_EQ(s.append({test_event1("tagA")}), 2u);
  expect_condition_failed(s, {test_event1("tagA")},
                          cond(test_event1_scope("tagA"), 0));
}

// K-06
TYPED_TEST(Conformance, K06ConditionOnUntouchedScopeSucceeds) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({test_event1()}), 1u);
  ASSERT_EQ(s.append({test_event1("tagA")}), 2u);
  EXPECT_EQ(s.append({test_event1("tagA")}, cond(test_event1_scope("tagB"), 0)),
            3u);
}

// K-07
TYPED_TEST(Conformance, K07ConditionWithoutAfter) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({test_event1()}), 1u);
  expect_condition_failed(s, {test_event1()}, cond(test_event1_scope()));
  EXPECT_EQ(s.append({test_event1()}, cond(q_item({"nonExistentEvent"},
                                                  {"testTagKey=default"}))),
            2u);
}

// K-08
TYPED_TEST(Conformance, K08MultiItemCondition) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({test_event1()}), 1u);
  auto one_matches = any_of({
    item({"nonExistentEvent"}, {"testTagKey=default"}),
    item({"testEvent1"}, {"testTagKey=default"}),
  });
  expect_condition_failed(s, {test_event1()}, cond(one_matches, 0));
  auto none_matches = any_of({
    item({"nonExistentEvent"}, {"testTagKey=default"}),
    item({"testEvent1"}, {"testTagKey=other"}),
  });
  EXPECT_EQ(s.append({test_event1()}, cond(none_matches, 0)), 2u);
}

// K-09: after=1 is from=2; backwards after=2 is from=1, after=1 is from=0.
TYPED_TEST(Conformance, K09ExclusiveAfterBothDirections) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("testEvent1", {"testTagKey=tag-key-1"}, "e1"),
                      ev("testEvent2", {"testTagKey=tag-key-2"}, "e2")}),
            2u);
  const auto all = query::all();
  EXPECT_EQ(read_data(s, all, fwd(2)), (str_list{"e2"}));
  EXPECT_EQ(read_data(s, all, bwd(1)), (str_list{"e1"}));
  EXPECT_EQ(read_data(s, all, bwd(0)), str_list{});
}

// K-10
TYPED_TEST(Conformance, K10TagKeyAndValueMustMatchExactly) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("testEvent1", {"testTagKey=tag-key-1"}, "e1"),
                      ev("testEvent2", {"testTagKey=tag-key-2"}, "e2")}),
            2u);
  str_list types{"testEvent1", "testEvent2"};
  EXPECT_EQ(read_data(s, q_item(types, {"unmatchedId=tag-key-1"})), str_list{});
  EXPECT_EQ(read_data(s, q_item(types, {"testTagKey=tag-key-1"})),
            (str_list{"e1"}));
}

// K-11
TYPED_TEST(Conformance, K11TypeQueriesAndLimits) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_k11(s));
  auto q2 = q_types({"testEvent2"});
  EXPECT_EQ(read_data(s, q2), (str_list{"e2", "e3"}));
  EXPECT_EQ(read_data(s, any_of({types_item({"testEvent2"}),
                                 types_item({"testEvent1"})})),
            (str_list{"e1", "e2", "e3"}));
  EXPECT_EQ(read_data(s, query::all(), bwd({}, 1)), (str_list{"e3"}));
  EXPECT_EQ(read_data(s, q2, fwd({}, 1)), (str_list{"e2"}));
  EXPECT_EQ(read_data(s, q2, bwd({}, 1)), (str_list{"e3"}));
}

// K-12: forward after=2 is from=3; backwards after=2 is from=1.
TYPED_TEST(Conformance, K12BoundaryExclusivity) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_k11(s));
  EXPECT_EQ(read_data(s, query::all(), fwd(3)), (str_list{"e3"}));
  EXPECT_EQ(read_data(s, query::all(), bwd(1)), (str_list{"e1"}));
}

// K-13: after=1 is from=2; backwards after=3 is from=2.
TYPED_TEST(Conformance, K13AfterWithLimit) {
  auto& s = *this->store_;
  ASSERT_NO_FATAL_FAILURE(append_k11(s));
  EXPECT_EQ(read_data(s, query::all(), fwd(2, 1)), (str_list{"e2"}));
  EXPECT_EQ(read_data(s, query::all(), bwd(2, 1)), (str_list{"e2"}));
  EXPECT_EQ(read_data(s, q_types({"testEvent2"}), fwd(2, 1)), (str_list{"e2"}));
}

// K-14
TYPED_TEST(Conformance, K14ConditionWithinCeilingSucceeds) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("TestEvent", {"e=1"})}), 1u);
  EXPECT_EQ(s.append({ev("TestEvent", {"e=1"})},
                     cond(q_item({"TestEvent"}, {"e=1"}), 1)),
            2u);
}

// K-15
TYPED_TEST(Conformance, K15DifferentTagScopeDoesNotConflict) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("TestEvent", {"e=1"})}), 1u);
  EXPECT_EQ(s.append({ev("TestEvent", {"e=2"})},
                     cond(q_item({"TestEvent"}, {"e=2"}), 0)),
            2u);
  EXPECT_EQ(count_events(s), 2u);
}

// K-15
TYPED_TEST(Conformance, K15DifferentTypeScopeDoesNotConflict) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("TypeA", {"e=1"})}), 1u);
  EXPECT_EQ(
    s.append({ev("TypeB", {"e=1"})}, cond(q_item({"TypeB"}, {"e=1"}), 0)), 2u);
}

// K-16
TYPED_TEST(Conformance, K16SubsetConditionCatchesSupersetTaggedEvent) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Order", {"entity=E1", "region=EU"})}), 1u);
  expect_condition_failed(s, {ev("Order", {"entity=E1"})},
                          cond(q_item({"Order"}, {"entity=E1"}), 0));
}

// K-17
TYPED_TEST(Conformance, K17SupersetConditionIgnoresSubsetTaggedEvent) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Order", {"entity=E1"})}), 1u);
  EXPECT_EQ(s.append({ev("Order", {"entity=E1", "region=EU"})},
                     cond(q_item({"Order"}, {"entity=E1", "region=EU"}), 0)),
            2u);
  EXPECT_EQ(count_events(s), 2u);
}

// K-18
TYPED_TEST(Conformance, K18ExactTagSetConditionFails) {
  auto& s = *this->store_;
  ASSERT_EQ(s.append({ev("Order", {"entity=E1", "region=EU"})}), 1u);
  expect_condition_failed(s, {ev("Order", {"entity=E1", "region=EU"})},
                          cond(q_item({"Order"}, {"region=EU", "entity=E1"}),
                               0));
}

// K-19
TYPED_TEST(Conformance, K19EmptyEventsArrayIsInvalid) {
  auto& s = *this->store_;
  expect_invalid(s, [&] {
    s.append({});
  });
  expect_invalid(s, [&] {
    s.append({}, cond(test_event1_scope(), 0));
  });
  EXPECT_EQ(s.head(), 0u);
}

// K-20..K-24 (concurrency, commit gap) are covered outside this file.

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
