// Shared by the DCB conformance suites (tests/store/conformance_*_test.cpp):
// the cases of /work/shared/dcb-conformance.md (groups S, W, WU, U,
// K-01..K-19, R) plus streaming reads, as typed tests over the in-memory and
// the PostgreSQL store. This header holds the helpers, the fixtures F1-F3,
// the U script and the K fixtures; each suite file holds some groups.
//
// Conversions to our conventions (DESIGN §2): `read_options::from` is
// inclusive (backwards: the inclusive maximum), so a forward `after=p` is
// `from=p+1` and a backwards `after=p` is `from=p-1`; positions are gap-free
// from 1, so exact numbers are asserted; the empty item list means ALL.
#pragma once

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

// -- helpers ------------------------------------------------------------------

using pos_list = std::vector<std::uint64_t>;
using str_list = std::vector<std::string>;

/// Builds an event.
inline event ev(std::string type, str_list tags = {}, bytes data = {},
                bytes metadata = {}) {
  return event{std::move(type), std::move(tags), std::move(data),
               std::move(metadata)};
}

/// Builds a query item matching any of `types` with all of `tags`.
inline query_item item(str_list types, str_list tags) {
  return query_item{std::move(types), std::move(tags)};
}

/// Builds a query item on types only.
inline query_item types_item(str_list types) {
  return item(std::move(types), {});
}

/// Builds a query item on tags only.
inline query_item tags_item(str_list tags) {
  return item({}, std::move(tags));
}

/// Builds the query that ORs `items`.
inline query any_of(std::vector<query_item> items) {
  return query{std::move(items)};
}

/// Builds a one-item query on types only.
inline query q_types(str_list types) {
  return any_of({types_item(std::move(types))});
}

/// Builds a one-item query on tags only.
inline query q_tags(str_list tags) {
  return any_of({tags_item(std::move(tags))});
}

/// Builds a one-item query on types and tags.
inline query q_item(str_list types, str_list tags) {
  return any_of({item(std::move(types), std::move(tags))});
}

/// Forward read options: from `from` (inclusive) on, at most `limit` events.
inline read_options fwd(std::optional<std::uint64_t> from = {},
                        std::optional<std::uint64_t> limit = {}) {
  read_options result;
  result.from = from;
  result.limit = limit;
  return result;
}

/// Backwards read options: from `from` (inclusive maximum; absent means the
/// head) down, at most `limit` events.
inline read_options bwd(std::optional<std::uint64_t> from = {},
                        std::optional<std::uint64_t> limit = {}) {
  auto result = fwd(from, limit);
  result.backwards = true;
  return result;
}

/// Stream chunking of at most `events` events and about `bytes` bytes.
inline stream_options
chunking(std::size_t events, std::size_t bytes = stream_options{}.chunk_bytes) {
  stream_options result;
  result.chunk_events = events;
  result.chunk_bytes = bytes;
  return result;
}

/// Builds an append condition; absent `after` means the whole log.
inline append_condition cond(query q, std::optional<std::uint64_t> after = {}) {
  return append_condition{std::move(q), after};
}

/// Returns `tags` as the store reports them: sorted and de-duplicated.
inline str_list sorted(str_list tags) {
  std::sort(tags.begin(), tags.end());
  tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
  return tags;
}

/// Returns the positions of `events`, in result order.
inline pos_list positions(const std::vector<sequenced_event>& events) {
  pos_list result;
  for (const auto& e : events)
    result.push_back(e.position);
  return result;
}

/// Returns the positions of a read result, in result order.
inline pos_list positions(const read_result& r) {
  return positions(r.events);
}

/// Returns the types of a read result, in result order.
inline str_list types_of(const read_result& r) {
  str_list result;
  for (const auto& e : r.events)
    result.push_back(e.event.type);
  return result;
}

/// Returns the data of a read result, in result order (fixtures use the
/// data as the event's label).
inline str_list data_of(const read_result& r) {
  str_list result;
  for (const auto& e : r.events)
    result.push_back(e.event.data);
  return result;
}

/// Reads `q` with `options` and returns the positions.
inline pos_list read_positions(event_store& s, const query& q,
                               const read_options& options = {}) {
  return positions(s.read(q, options));
}

/// Reads `q` with `options` and returns the data labels.
inline str_list read_data(event_store& s, const query& q,
                          const read_options& options = {}) {
  return data_of(s.read(q, options));
}

/// Returns the number of events in the store.
inline std::size_t count_events(event_store& s) {
  return s.read(query::all()).events.size();
}

/// Expects `actual` to be `expected` at `position`, comparing tags as sets.
inline void
expect_event(const sequenced_event& actual, std::uint64_t position,
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
inline void
expect_same_events(const std::vector<sequenced_event>& actual,
                   const std::vector<sequenced_event>& expected,
                   std::source_location loc = std::source_location::current()) {
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
inline void expect_condition_failed(event_store& s, std::vector<event> events,
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
inline void
expect_invalid(event_store& s, F&& fn,
               std::source_location loc = std::source_location::current()) {
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
inline std::vector<sequenced_event>
drain(event_stream& st, std::vector<std::size_t>* sizes = nullptr) {
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
inline std::vector<event> f1_events() {
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
inline void append_f1(event_store& s) {
  const auto head = s.head();
  ASSERT_EQ(s.append(f1_events()), head + 6);
}

/// Appends fixture F2 (8 SomeEventType events, data "") in one call
/// (positions 1..8 on an empty store).
inline void append_f2(event_store& s) {
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
inline void append_f3(event_store& s) {
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
inline void append_numbered(event_store& s, int n) {
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
inline const u_script& u() {
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
inline const std::vector<u_step>& u_steps() {
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
inline void u_run(event_store& s, int id) {
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
inline void u_replay(event_store& s, int until) {
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
inline event test_event1(const std::string& v = "default") {
  return ev("testEvent1", {"testTagKey=" + v}, "{}");
}

/// The query `{types:[testEvent1], tags:[testTagKey=v]}`.
inline query test_event1_scope(const std::string& v = "default") {
  return q_item({"testEvent1"}, {"testTagKey=" + v});
}

/// Appends K-11's three events e1, e2, e3 in separate calls.
inline void append_k11(event_store& s) {
  ASSERT_EQ(s.append({ev("testEvent1", {"testTagKey=tag-key-1"}, "e1")}), 1u);
  ASSERT_EQ(s.append({ev("testEvent2", {"testTagKey=tag-key-2"}, "e2")}), 2u);
  ASSERT_EQ(s.append({ev("testEvent2", {"testTagKey=ev-3"}, "e3")}), 3u);
}

// -- the typed suite ----------------------------------------------------------

template <class Factory>
class Conformance : public StoreTest<Factory> {};

} // namespace dcbd::test
