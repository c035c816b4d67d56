// DCB conformance, groups WU and K (see tests/store/conformance.hpp).
#include "tests/store/conformance.hpp"

namespace dcbd::test {
namespace {

TYPED_TEST_SUITE(Conformance, store_kinds, store_kind_names);

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

} // namespace
} // namespace dcbd::test
