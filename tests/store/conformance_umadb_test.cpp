// DCB conformance, group U (UmaDB's stateful script) (see
// tests/store/conformance.hpp).
#include "tests/store/conformance.hpp"

namespace dcbd::test {
namespace {

TYPED_TEST_SUITE(Conformance, store_kinds, store_kind_names);

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

} // namespace
} // namespace dcbd::test
