// Decision models without actors: union queries, projector validation,
// projection over both stores, and typed msgpack payloads.
#include "store/decision.hpp"

#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/model.hpp"
#include "store/payload.hpp"
#include "tests/support/pg_fixture.hpp"

#include <gtest/gtest.h>

#include <any>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

namespace dcbd::test {
namespace {

// -- helpers ------------------------------------------------------------------

using str_list = std::vector<std::string>;
using pos_list = std::vector<std::uint64_t>;

event ev(std::string type, str_list tags, bytes data = "d") {
  return event{std::move(type), std::move(tags), std::move(data), {}};
}

query_item item(str_list types, str_list tags) {
  return query_item{std::move(types), std::move(tags)};
}

/// A projector that records the positions it was fed.
projector recorder(std::string id, query q) {
  return make_projector(std::move(id), std::move(q), pos_list{},
                        [](pos_list& seen, const sequenced_event& e) {
                          seen.push_back(e.position);
                        });
}

/// Expects `f` to throw `store_error` with `code` and a message containing
/// `part`.
template <class F>
void expect_store_error(F f, errc code, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no store_error thrown";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string{e.what()}.find(part), std::string::npos)
      << "'" << e.what() << "' does not contain '" << part << "'";
  }
}

// -- union_query --------------------------------------------------------------

TEST(UnionQuery, DedupesItemsInFirstSeenOrder) {
  auto a = item({"A"}, {"k:1"});
  auto b = item({"B"}, {});
  auto c = item({}, {"k:2"});
  std::vector<projector> ps{recorder("p1", query{{a, b}}),
                            recorder("p2", query{{b, c, a}}),
                            recorder("p3", query{{c}})};
  EXPECT_EQ(union_query(ps), (query{{a, b, c}}));
}

TEST(UnionQuery, MatchesAllWhenOneProjectorDoes) {
  std::vector<projector> ps{recorder("p1", query{{item({"A"}, {})}}),
                            recorder("all", query::all()),
                            recorder("p2", query{{item({"B"}, {})}})};
  EXPECT_TRUE(union_query(ps).matches_all());
}

TEST(UnionQuery, OfNoProjectorsIsEmpty) {
  EXPECT_TRUE(union_query({}).items.empty());
}

// -- validate -----------------------------------------------------------------

TEST(ValidateProjectors, RejectsAnEmptyId) {
  std::vector<projector> ps{recorder("ok", query::all()),
                            recorder("", query::all())};
  expect_store_error(
    [&] {
      validate(ps, limits{});
    },
    errc::invalid_argument, "projectors[1].id: must not be empty");
}

TEST(ValidateProjectors, RejectsADuplicateId) {
  std::vector<projector> ps{recorder("a", query::all()),
                            recorder("b", query::all()),
                            recorder("a", query::all())};
  expect_store_error(
    [&] {
      validate(ps, limits{});
    },
    errc::invalid_argument, "projectors[2].id: duplicate id 'a'");
}

TEST(ValidateProjectors, RejectsAMissingApply) {
  std::vector<projector> ps{recorder("a", query::all())};
  ps[0].apply = nullptr;
  expect_store_error(
    [&] {
      validate(ps, limits{});
    },
    errc::invalid_argument, "projectors[0].apply: must be set");
}

TEST(ValidateProjectors, RejectsAnInvalidQuery) {
  std::vector<projector> ps{recorder("a", query::all()),
                            recorder("b", query{{item({}, {})}})};
  expect_store_error(
    [&] {
      validate(ps, limits{});
    },
    errc::invalid_argument, "projectors[1].query");
  std::vector<projector> empty_tag{recorder("a", query{{item({}, {""})}})};
  expect_store_error(
    [&] {
      validate(empty_tag, limits{});
    },
    errc::invalid_argument, "projectors[0].query");
}

TEST(ValidateProjectors, NormalizesQueries) {
  std::vector<projector> ps{
    recorder("a", query{{item({"B", "A", "B"}, {"k:2", "k:1", "k:2"})}})};
  validate(ps, limits{});
  EXPECT_EQ(ps[0].query, (query{{item({"A", "B"}, {"k:1", "k:2"})}}));
}

TEST(ValidateProjectors, AcceptsAnEmptyModel) {
  std::vector<projector> ps;
  EXPECT_NO_THROW(validate(ps, limits{}));
}

// -- decision_states ----------------------------------------------------------

TEST(DecisionStates, GetReturnsTheTypedState) {
  decision_states s;
  s.add("n", std::any{42});
  s.add("name", std::any{std::string{"x"}});
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s.get<int>("n"), 42);
  EXPECT_EQ(s.get<std::string>("name"), "x");
}

TEST(DecisionStates, GetThrowsForAWrongTypeOrAnUnknownId) {
  decision_states s;
  s.add("n", std::any{42});
  EXPECT_THROW(s.get<std::string>("n"), std::bad_any_cast);
  EXPECT_THROW(s.get<long>("n"), std::bad_any_cast);
  EXPECT_THROW(s.get<int>("missing"), std::out_of_range);
  try {
    s.find("missing");
    ADD_FAILURE() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string{e.what()}.find("'missing'"), std::string::npos)
      << e.what();
  }
}

// -- project, over both stores ------------------------------------------------

template <class Factory>
class Project : public StoreTest<Factory> {
protected:
  /// Appends the log every test below projects:
  ///   1 A [k:1]   2 B [k:1]   3 A [k:2]   4 C [k:1 k:2]   5 B [k:3]
  void fill() {
    auto& s = *this->store_;
    s.append({ev("A", {"k:1"}), ev("B", {"k:1"}), ev("A", {"k:2"})});
    s.append({ev("C", {"k:1", "k:2"})});
    s.append({ev("B", {"k:3"})});
  }
};

TYPED_TEST_SUITE(Project, store_kinds, store_kind_names);

TYPED_TEST(Project, FeedsEachProjectorOnlyTheEventsItMatches) {
  this->fill();
  std::vector<projector> ps{recorder("a", query{{item({"A"}, {})}}),
                            recorder("k1", query{{item({}, {"k:1"})}}),
                            recorder("bk3", query{{item({"B"}, {"k:3"})}}),
                            recorder("none", query{{item({"Z"}, {})}})};
  validate(ps, limits{});
  auto d = project(*this->store_, ps);
  EXPECT_EQ(d.states->size(), 4u);
  EXPECT_EQ(d.states->template get<pos_list>("a"), (pos_list{1, 3}));
  EXPECT_EQ(d.states->template get<pos_list>("k1"), (pos_list{1, 2, 4}));
  EXPECT_EQ(d.states->template get<pos_list>("bk3"), (pos_list{5}));
  EXPECT_EQ(d.states->template get<pos_list>("none"), (pos_list{}));
  EXPECT_EQ(d.head, 5u);
  // Read once with the union: every event but none matches some projector.
  EXPECT_EQ(d.events_read, 5u);
  ASSERT_TRUE(d.condition);
  EXPECT_EQ(d.condition->fail_if_events_match, union_query(ps));
  EXPECT_EQ(d.condition->after, std::optional<std::uint64_t>{5});
}

TYPED_TEST(Project, ReadsOnlyTheUnionAndFoldsTypedStates) {
  this->fill();
  struct counts {
    int a = 0;
    std::string last_tag;
  };
  auto folder = make_projector("counts", query{{item({"A", "C"}, {"k:2"})}},
                               counts{},
                               [](counts& c, const sequenced_event& e) {
                                 ++c.a;
                                 c.last_tag = e.event.tags.back();
                               });
  std::vector<projector> ps{std::move(folder)};
  validate(ps, limits{});
  auto d = project(*this->store_, ps);
  auto& c = d.states->template get<counts>("counts");
  EXPECT_EQ(c.a, 2);
  EXPECT_EQ(c.last_tag, "k:2");
  EXPECT_EQ(d.events_read, 2u);
  // The condition's `after` is the store head, not the last matching event.
  EXPECT_EQ(d.head, 5u);
  ASSERT_TRUE(d.condition);
  EXPECT_EQ(d.condition->after, std::optional<std::uint64_t>{5});
}

TYPED_TEST(Project, MatchAllProjectorSeesEveryEvent) {
  this->fill();
  std::vector<projector> ps{recorder("all", query::all()),
                            recorder("b", query{{item({"B"}, {})}})};
  validate(ps, limits{});
  auto d = project(*this->store_, ps);
  EXPECT_EQ(d.states->template get<pos_list>("all"), (pos_list{1, 2, 3, 4, 5}));
  EXPECT_EQ(d.states->template get<pos_list>("b"), (pos_list{2, 5}));
  ASSERT_TRUE(d.condition);
  EXPECT_TRUE(d.condition->fail_if_events_match.matches_all());
  EXPECT_EQ(d.condition->after, std::optional<std::uint64_t>{5});
}

TYPED_TEST(Project, SmallChunksGiveTheSameResult) {
  this->fill();
  std::vector<projector> ps{recorder("k1", query{{item({}, {"k:1"})}}),
                            recorder("b", query{{item({"B"}, {})}})};
  validate(ps, limits{});
  stream_options chunking;
  chunking.chunk_events = 1;
  auto d = project(*this->store_, ps, chunking);
  EXPECT_EQ(d.states->template get<pos_list>("k1"), (pos_list{1, 2, 4}));
  EXPECT_EQ(d.states->template get<pos_list>("b"), (pos_list{2, 5}));
  EXPECT_EQ(d.events_read, 4u);
  EXPECT_EQ(d.head, 5u);
}

TYPED_TEST(Project, EmptyStoreGivesInitialStatesAndAfterZero) {
  std::vector<projector> ps{recorder("a", query{{item({"A"}, {})}}),
                            make_projector("n", query::all(), 7,
                                           [](int& n, const sequenced_event&) {
                                             ++n;
                                           })};
  validate(ps, limits{});
  auto d = project(*this->store_, ps);
  EXPECT_EQ(d.states->template get<pos_list>("a"), (pos_list{}));
  EXPECT_EQ(d.states->template get<int>("n"), 7);
  EXPECT_EQ(d.head, 0u);
  EXPECT_EQ(d.events_read, 0u);
  ASSERT_TRUE(d.condition);
  EXPECT_EQ(d.condition->after, std::optional<std::uint64_t>{0});
}

TYPED_TEST(Project, EmptyModelHasNoCondition) {
  this->fill();
  auto d = project(*this->store_, {});
  EXPECT_EQ(d.states->size(), 0u);
  EXPECT_FALSE(d.condition);
  EXPECT_EQ(d.events_read, 0u);
}

TYPED_TEST(Project, ConditionFailsOnlyWhenAMatchingEventWasAppended) {
  this->fill();
  auto& s = *this->store_;
  std::vector<projector> ps{recorder("a2", query{{item({"A"}, {"k:2"})}}),
                            recorder("c", query{{item({"C"}, {})}})};
  validate(ps, limits{});
  auto d = project(s, ps);
  ASSERT_TRUE(d.condition);
  // An unrelated event does not invalidate the decision...
  s.append({ev("A", {"k:1"})});
  EXPECT_EQ(s.append({ev("D", {"k:9"})}, d.condition), 7u);
  // ...an event one projector would have seen does.
  s.append({ev("C", {"k:7"})});
  expect_store_error(
    [&] {
      s.append({ev("D", {"k:9"})}, d.condition);
    },
    errc::append_condition_failed, "");
  // Projecting again gives a condition that holds.
  auto again = project(s, ps);
  EXPECT_EQ(again.states->template get<pos_list>("c"), (pos_list{4, 8}));
  EXPECT_EQ(s.append({ev("D", {"k:9"})}, again.condition), 9u);
}

TYPED_TEST(Project, ThrowingApplyIsInternalNamingTheProjector) {
  this->fill();
  std::vector<projector> ps{
    recorder("fine", query::all()),
    make_projector("fragile", query{{item({"C"}, {})}}, 0,
                   [](int&, const sequenced_event& e) {
                     throw std::runtime_error("bad event at "
                                              + std::to_string(e.position));
                   })};
  validate(ps, limits{});
  expect_store_error(
    [&] {
      project(*this->store_, ps);
    },
    errc::internal, "projector 'fragile' threw: bad event at 4");
  ps[1].apply = [](std::any&, const sequenced_event&) {
    throw 42;
  };
  expect_store_error(
    [&] {
      project(*this->store_, ps);
    },
    errc::internal, "projector 'fragile' threw");
}

// -- payloads -----------------------------------------------------------------

struct course_defined {
  std::string course_id;
  int capacity = 0;
  MSGPACK_DEFINE_MAP(course_id, capacity);
};

struct course_defined_v2 {
  std::string course_id;
  int capacity = 0;
  std::string title;
  MSGPACK_DEFINE_MAP(course_id, capacity, title);
};

struct positional {
  int a = 0;
  int b = 0;
  MSGPACK_DEFINE(a, b);
};

TEST(Payload, RoundTripsAStruct) {
  auto data = encode_payload(course_defined{"c1", 30});
  auto back = decode_payload<course_defined>(data);
  EXPECT_EQ(back.course_id, "c1");
  EXPECT_EQ(back.capacity, 30);
}

TEST(Payload, RoundTripsStandardTypes) {
  std::map<std::string, std::vector<int>> m{{"a", {1, 2}}, {"b", {}}};
  EXPECT_EQ(decode_payload<decltype(m)>(encode_payload(m)), m);
  std::string with_nul{"x\0y", 3};
  EXPECT_EQ(decode_payload<std::string>(encode_payload(with_nul)), with_nul);
}

TEST(Payload, IsAMapWithFieldNames) {
  auto data = encode_payload(course_defined{"c1", 30});
  // fixmap of 2, "course_id": "c1", "capacity": 30
  std::string expected = "\x82\xa9"
                         "course_id"
                         "\xa2"
                         "c1"
                         "\xa8"
                         "capacity"
                         "\x1e";
  EXPECT_EQ(data, expected);
}

TEST(Payload, MapsTolerateAddedAndMissingFields) {
  auto newer = encode_payload(course_defined_v2{"c1", 30, "Algebra"});
  auto old = decode_payload<course_defined>(newer);
  EXPECT_EQ(old.course_id, "c1");
  EXPECT_EQ(old.capacity, 30);
  auto older = encode_payload(course_defined{"c2", 5});
  auto v2 = decode_payload<course_defined_v2>(older);
  EXPECT_EQ(v2.course_id, "c2");
  EXPECT_EQ(v2.capacity, 5);
  EXPECT_EQ(v2.title, "");
}

TEST(Payload, MakeEventEncodesThePayload) {
  auto e = make_event("CourseDefined", {"course:c1"}, course_defined{"c1", 3});
  EXPECT_EQ(e.type, "CourseDefined");
  EXPECT_EQ(e.tags, (str_list{"course:c1"}));
  EXPECT_EQ(e.metadata, "");
  EXPECT_EQ(decode_payload<course_defined>(e.data).capacity, 3);
}

TEST(Payload, GarbageIsInvalidArgument) {
  // 0xc1 is never used in msgpack.
  expect_store_error(
    [] {
      decode_payload<course_defined>(std::string{"\xc1"});
    },
    errc::invalid_argument, "payload does not decode");
  // A map that announces two entries and ends.
  expect_store_error(
    [] {
      decode_payload<course_defined>(std::string{"\x82\xa1x"});
    },
    errc::invalid_argument, "payload does not decode");
  expect_store_error(
    [] {
      decode_payload<course_defined>("");
    },
    errc::invalid_argument, "payload does not decode");
}

TEST(Payload, TrailingBytesAreInvalidArgument) {
  auto data = encode_payload(course_defined{"c1", 30}) + "x";
  expect_store_error(
    [&] {
      decode_payload<course_defined>(data);
    },
    errc::invalid_argument, "trailing bytes");
  auto two = encode_payload(1) + encode_payload(2);
  expect_store_error(
    [&] {
      decode_payload<int>(two);
    },
    errc::invalid_argument, "trailing bytes");
}

TEST(Payload, WrongShapeIsInvalidArgument) {
  expect_store_error(
    [] {
      decode_payload<course_defined>(encode_payload(42));
    },
    errc::invalid_argument, "payload does not decode");
  expect_store_error(
    [] {
      decode_payload<int>(encode_payload(std::string{"x"}));
    },
    errc::invalid_argument, "payload does not decode");
  expect_store_error(
    [] {
      decode_payload<positional>(encode_payload(course_defined{"c1", 1}));
    },
    errc::invalid_argument, "payload does not decode");
  // A field of the wrong type.
  std::map<std::string, std::string> wrong{{"course_id", "c1"},
                                           {"capacity", "many"}};
  expect_store_error(
    [&] {
      decode_payload<course_defined>(encode_payload(wrong));
    },
    errc::invalid_argument, "payload does not decode");
}

} // namespace
} // namespace dcbd::test
