// Group append semantics (DESIGN §2): requests are independent, and request
// i's condition sees the database and the requests accepted before it.
#include "tests/support/pg_fixture.hpp"

namespace dcbd::test {
namespace {

template <class Factory>
class GroupAppend : public StoreTest<Factory> {
protected:
  static append_request req(std::vector<event> events) {
    return append_request{std::move(events), std::nullopt};
  }

  static append_request req(std::vector<event> events, query q,
                            std::optional<std::uint64_t> after) {
    return append_request{std::move(events), append_condition{q, after}};
  }

  static query tags(std::vector<std::string> ts) {
    return query{{query_item{{}, std::move(ts)}}};
  }
};

TYPED_TEST_SUITE(GroupAppend, store_kinds, store_kind_names);

TYPED_TEST(GroupAppend, LaterRequestSeesEventsOfEarlierAcceptedRequest) {
  auto& s = *this->store_;
  auto res = s.append_group({
    this->req({event{"T", {"x"}}}),
    this->req({event{"T", {"z"}}}, this->tags({"x"}), 0),
    this->req({event{"T", {"y"}}}, this->tags({"y"}), 0),
  });
  ASSERT_EQ(res.size(), 3u);
  EXPECT_TRUE(res[0].ok());
  EXPECT_EQ(res[0].last_position, 1u);
  EXPECT_EQ(res[1].code, errc::append_condition_failed);
  EXPECT_EQ(res[1].last_position, 0u);
  EXPECT_TRUE(res[2].ok());
  EXPECT_EQ(res[2].last_position, 2u);
  EXPECT_EQ(s.head(), 2u);
}

TYPED_TEST(GroupAppend, RejectedRequestDoesNotCountForLaterRequests) {
  auto& s = *this->store_;
  s.append({event{"T", {"x"}}});
  auto res = s.append_group({
    // Fails against the database: its events never become visible...
    this->req({event{"T", {"y"}}}, this->tags({"x"}), std::nullopt),
    // ...so a condition on them holds.
    this->req({event{"T", {"w"}}}, this->tags({"y"}), std::nullopt),
  });
  EXPECT_EQ(res[0].code, errc::append_condition_failed);
  ASSERT_TRUE(res[1].ok()) << res[1].message;
  EXPECT_EQ(res[1].last_position, 2u);
}

TYPED_TEST(GroupAppend, InGroupEventsAtOrBelowAfterAreIgnored) {
  auto& s = *this->store_;
  s.append({event{"T", {"a"}}, event{"T", {"b"}}});
  auto res = s.append_group({
    this->req({event{"T", {"x"}}, event{"T", {"y"}}}),     // positions 3 and 4
    this->req({event{"T", {"n"}}}, this->tags({"x"}), 3),  // x at 3: ignored
    this->req({event{"T", {"n"}}}, this->tags({"y"}), 3),  // y at 4: conflict
    this->req({event{"T", {"n"}}}, this->tags({"x"}), 99), // after > head
  });
  EXPECT_TRUE(res[0].ok());
  EXPECT_EQ(res[0].last_position, 4u);
  ASSERT_TRUE(res[1].ok()) << res[1].message;
  EXPECT_EQ(res[1].last_position, 5u);
  EXPECT_EQ(res[2].code, errc::append_condition_failed);
  ASSERT_TRUE(res[3].ok()) << res[3].message;
  EXPECT_EQ(res[3].last_position, 6u);
}

TYPED_TEST(GroupAppend, MatchAllConditionSeesEarlierRequests) {
  auto& s = *this->store_;
  s.append({event{"T", {"a"}}});
  auto res = s.append_group({
    this->req({event{"T", {"b"}}}),                  // position 2
    this->req({event{"T", {"c"}}}, query::all(), 1), // 2 > 1: conflict
    this->req({event{"T", {"d"}}}, query::all(), 2), // ok at 3
    this->req({event{"T", {"e"}}}, query::all(), 2), // 3 > 2: conflict
  });
  EXPECT_TRUE(res[0].ok());
  EXPECT_EQ(res[1].code, errc::append_condition_failed);
  ASSERT_TRUE(res[2].ok()) << res[2].message;
  EXPECT_EQ(res[2].last_position, 3u);
  EXPECT_EQ(res[3].code, errc::append_condition_failed);
}

TYPED_TEST(GroupAppend, TypeOnlyConditionsSeeDatabaseAndGroup) {
  auto& s = *this->store_;
  s.append({event{"Registered", {"user:1"}}});
  query registered{{query_item{{"Registered"}, {}}}};
  auto res = s.append_group({
    this->req({event{"Other", {}}}, registered, 0),      // db conflict
    this->req({event{"Other", {}}}, registered, 1),      // ok at 2
    this->req({event{"Registered", {}}}, registered, 1), // ok at 3
    this->req({event{"Other", {}}}, registered, 2),      // 3 > 2: conflict
  });
  EXPECT_EQ(res[0].code, errc::append_condition_failed);
  EXPECT_TRUE(res[1].ok());
  EXPECT_TRUE(res[2].ok());
  EXPECT_EQ(res[2].last_position, 3u);
  EXPECT_EQ(res[3].code, errc::append_condition_failed);
}

TYPED_TEST(GroupAppend, InvalidRequestFailsAloneAndWritesNothing) {
  auto& s = *this->store_;
  auto res = s.append_group({
    this->req({event{"T", {"a"}}}),
    this->req({}),
    this->req({event{"", {"b"}}}),
    this->req({event{"T", {"c"}}}, query{{query_item{}}}, 0),
    this->req({event{"T", {"d"}}}),
  });
  EXPECT_TRUE(res[0].ok());
  EXPECT_EQ(res[1].code, errc::invalid_argument);
  EXPECT_EQ(res[2].code, errc::invalid_argument);
  EXPECT_NE(res[2].message.find("events[0].type"), std::string::npos)
    << res[2].message;
  EXPECT_EQ(res[3].code, errc::invalid_argument);
  EXPECT_NE(res[3].message.find("condition.fail_if_events_match.items[0]"),
            std::string::npos)
    << res[3].message;
  ASSERT_TRUE(res[4].ok());
  EXPECT_EQ(res[4].last_position, 2u);
  auto all = s.read(query::all());
  ASSERT_EQ(all.events.size(), 2u);
  EXPECT_EQ(all.events[1].event.tags, std::vector<std::string>{"d"});
}

TYPED_TEST(GroupAppend, HundredDistinctBoundariesAllSucceed) {
  auto& s = *this->store_;
  std::vector<append_request> group;
  for (int i = 0; i < 100; ++i) {
    auto tag = "course:" + std::to_string(i);
    group.push_back(
      this->req({event{"Subscribed", {tag}}}, this->tags({tag}), 0));
  }
  auto res = s.append_group(std::move(group));
  for (std::size_t i = 0; i < res.size(); ++i) {
    ASSERT_TRUE(res[i].ok()) << i << ": " << res[i].message;
    EXPECT_EQ(res[i].last_position, i + 1);
  }
}

TYPED_TEST(GroupAppend, HundredRequestsOnOneBoundaryOnlyFirstWins) {
  auto& s = *this->store_;
  std::vector<append_request> group;
  for (int i = 0; i < 100; ++i)
    group.push_back(this->req({event{"Subscribed", {"course:1"}}},
                              this->tags({"course:1"}), 0));
  auto res = s.append_group(std::move(group));
  EXPECT_TRUE(res[0].ok());
  for (std::size_t i = 1; i < res.size(); ++i)
    EXPECT_EQ(res[i].code, errc::append_condition_failed) << i;
  EXPECT_EQ(s.head(), 1u);
}

TYPED_TEST(GroupAppend, EmptyGroupReturnsNoResults) {
  EXPECT_TRUE(this->store_->append_group({}).empty());
  EXPECT_EQ(this->store_->head(), 0u);
}

} // namespace
} // namespace dcbd::test
