// Unit tests of the DCB model: query matching, normalization and error
// names (DESIGN §2; dcb-conformance.md S-01, WU-15).
#include "store/model.hpp"

#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/matching.hpp"
#include "store/validation.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using dcbd::errc;
using dcbd::event;
using dcbd::query;
using dcbd::query_item;

static_assert(std::is_nothrow_move_constructible_v<event>);
static_assert(std::is_nothrow_move_constructible_v<query>);
static_assert(std::is_nothrow_move_constructible_v<dcbd::append_request>);

// Builds a normalized event with the given type and tags.
event make_event(std::string type, std::vector<std::string> tags = {}) {
  event e{std::move(type), std::move(tags), {}, {}};
  dcbd::normalize(e);
  return e;
}

// Builds a normalized query item.
query_item make_item(std::vector<std::string> types,
                     std::vector<std::string> tags = {}) {
  query q{{query_item{std::move(types), std::move(tags)}}};
  dcbd::normalize(q);
  return q.items.front();
}

// Builds a normalized query.
query make_query(std::vector<query_item> items) {
  query q{std::move(items)};
  dcbd::normalize(q);
  return q;
}

// -- matching: single items --------------------------------------------------

TEST(Matching, ItemWithTypesOnlyMatchesOnTypeAlone) {
  auto item = make_item({"Registered", "Renamed"});
  EXPECT_TRUE(dcbd::matches(item, make_event("Registered")));
  EXPECT_TRUE(dcbd::matches(item, make_event("Renamed", {"user:1"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("Deleted")));
  EXPECT_FALSE(dcbd::matches(item, make_event("Deleted", {"user:1"})));
}

TEST(Matching, TypeComparisonIsExact) {
  auto item = make_item({"Registered"});
  EXPECT_FALSE(dcbd::matches(item, make_event("registered")));
  EXPECT_FALSE(dcbd::matches(item, make_event("Registered ")));
  EXPECT_FALSE(dcbd::matches(item, make_event("Register")));
  EXPECT_FALSE(dcbd::matches(item, make_event("RegisteredX")));
}

TEST(Matching, ItemWithTagsOnlyMatchesAnyTypeCarryingTheTags) {
  auto item = make_item({}, {"user:1"});
  EXPECT_TRUE(dcbd::matches(item, make_event("A", {"user:1"})));
  EXPECT_TRUE(dcbd::matches(item, make_event("B", {"org:7", "user:1"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("A")));
  EXPECT_FALSE(dcbd::matches(item, make_event("A", {"user:2"})));
  // Tag values are compared whole, not by prefix.
  EXPECT_FALSE(dcbd::matches(item, make_event("A", {"user:10"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("A", {"user:"})));
}

TEST(Matching, ItemWithTypesAndTagsNeedsBoth) {
  auto item = make_item({"A", "B"}, {"user:1"});
  EXPECT_TRUE(dcbd::matches(item, make_event("A", {"user:1"})));
  EXPECT_TRUE(dcbd::matches(item, make_event("B", {"user:1", "x:y"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("C", {"user:1"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("A", {"user:2"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("A")));
}

TEST(Matching, EventTagsMustBeASupersetOfItemTags) {
  auto item = make_item({}, {"a:1", "b:2"});
  EXPECT_TRUE(dcbd::matches(item, make_event("T", {"a:1", "b:2"})));
  EXPECT_TRUE(dcbd::matches(item, make_event("T", {"b:2", "c:3", "a:1"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("T", {"a:1"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("T", {"b:2"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("T", {"a:1", "c:3"})));
  EXPECT_FALSE(dcbd::matches(item, make_event("T")));
}

// WU-15, item by item.
TEST(Matching, ConformanceWU15) {
  auto typed = make_item({"SomeType"}, {"tag1"});
  EXPECT_TRUE(dcbd::matches(typed, make_event("SomeType", {"tag1", "tag2"})));
  EXPECT_FALSE(dcbd::matches(typed, make_event("OtherType", {"tag1"})));
  EXPECT_FALSE(dcbd::matches(typed, make_event("SomeType", {"tag2"})));

  auto two_tags = make_item({}, {"tag1", "tag2"});
  EXPECT_TRUE(
    dcbd::matches(two_tags, make_event("Any", {"tag1", "tag2", "tag3"})));
  EXPECT_FALSE(dcbd::matches(two_tags, make_event("Any", {"tag1", "tag3"})));

  auto any = make_event("Whatever", {"x"});
  EXPECT_TRUE(dcbd::matches(query::all(), any));
  EXPECT_TRUE(dcbd::matches(query::all(), make_event("Other")));

  auto either = make_query({typed, two_tags});
  EXPECT_TRUE(dcbd::matches(either, make_event("SomeType", {"tag1"})));
  EXPECT_TRUE(dcbd::matches(either, make_event("Other", {"tag2", "tag1"})));
  EXPECT_FALSE(dcbd::matches(either, make_event("Other", {"tag1"})));
}

// -- matching: queries -------------------------------------------------------

TEST(Matching, AllQueryMatchesEveryEvent) {
  auto all = query::all();
  EXPECT_TRUE(all.matches_all());
  EXPECT_TRUE(all.items.empty());
  EXPECT_TRUE(dcbd::matches(all, make_event("A")));
  EXPECT_TRUE(dcbd::matches(all, make_event("B", {"x:1", "y:2"})));
  EXPECT_FALSE(make_query({make_item({"A"})}).matches_all());
}

TEST(Matching, QueryIsAnOrOverItems) {
  auto q = make_query({make_item({"A"}), make_item({}, {"k:1"})});
  EXPECT_TRUE(dcbd::matches(q, make_event("A")));
  EXPECT_TRUE(dcbd::matches(q, make_event("B", {"k:1"})));
  EXPECT_TRUE(dcbd::matches(q, make_event("A", {"k:1"})));
  EXPECT_FALSE(dcbd::matches(q, make_event("B")));
  EXPECT_FALSE(dcbd::matches(q, make_event("B", {"k:2"})));
}

TEST(Matching, SingleItemQueryEqualsItem) {
  auto item = make_item({"A"}, {"k:1"});
  auto q = make_query({item});
  for (const auto& e :
       {make_event("A", {"k:1"}), make_event("A"), make_event("B", {"k:1"}),
        make_event("A", {"k:1", "k:2"})})
    EXPECT_EQ(dcbd::matches(q, e), dcbd::matches(item, e)) << e.type;
}

// S-01: the specification's example query, evaluated per event.
TEST(Matching, ConformanceS01) {
  auto q = make_query({
    make_item({"EventType1", "EventType2"}),
    make_item({}, {"tag1", "tag2"}),
    make_item({"EventType2", "EventType3"}, {"tag1", "tag3"}),
  });
  std::vector<event> log{
    make_event("EventType1"),
    make_event("EventType3", {"tag1"}),
    make_event("EventType3", {"tag1", "tag3"}),
    make_event("X", {"tag2", "tag1", "tag9"}),
    make_event("EventType4", {"tag1", "tag3"}),
    make_event("EventType3", {"tag3"}),
  };
  std::vector<std::size_t> hits;
  for (std::size_t i = 0; i < log.size(); ++i)
    if (dcbd::matches(q, log[i]))
      hits.push_back(i + 1);
  EXPECT_EQ(hits, (std::vector<std::size_t>{1, 3, 4}));
}

// -- normalization -----------------------------------------------------------

TEST(Normalize, SortsAndDeduplicatesEventTags) {
  event e{"T", {"b:2", "a:1", "b:2", "c:3", "a:1"}, "d", "m"};
  dcbd::normalize(e);
  EXPECT_EQ(e.tags, (std::vector<std::string>{"a:1", "b:2", "c:3"}));
  EXPECT_EQ(e.type, "T");
  EXPECT_EQ(e.data, "d");
  EXPECT_EQ(e.metadata, "m");
}

TEST(Normalize, SortsEventTagsByBytes) {
  // Byte order: upper case before lower case, multi-byte UTF-8 last.
  event e{"T", {"\xc3\xa9t\xc3\xa9", "z", "a", "Z", "_"}, {}, {}};
  dcbd::normalize(e);
  EXPECT_EQ(e.tags, (std::vector<std::string>{"Z", "_", "a", "z",
                                              "\xc3\xa9t\xc3\xa9"}));
}

TEST(Normalize, IsIdempotentAndKeepsEmptyTags) {
  event e{"T", {}, {}, {}};
  dcbd::normalize(e);
  EXPECT_TRUE(e.tags.empty());
  event f{"T", {"x", "x", "x"}, {}, {}};
  dcbd::normalize(f);
  EXPECT_EQ(f.tags, (std::vector<std::string>{"x"}));
  auto g = f;
  dcbd::normalize(g);
  EXPECT_EQ(g, f);
}

TEST(Normalize, SortsAndDeduplicatesItemTypesAndTags) {
  query q{{
    query_item{{"B", "A", "B"}, {"k:2", "k:1", "k:2", "k:1"}},
    query_item{{"Z"}, {}},
    query_item{{}, {"y", "x", "y"}},
  }};
  dcbd::normalize(q);
  ASSERT_EQ(q.items.size(), 3u);
  EXPECT_EQ(q.items[0].types, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(q.items[0].tags, (std::vector<std::string>{"k:1", "k:2"}));
  EXPECT_EQ(q.items[1].types, (std::vector<std::string>{"Z"}));
  EXPECT_TRUE(q.items[1].tags.empty());
  EXPECT_TRUE(q.items[2].types.empty());
  EXPECT_EQ(q.items[2].tags, (std::vector<std::string>{"x", "y"}));
}

TEST(Normalize, KeepsItemOrderAndAllQuery) {
  // Items are an OR: their order carries no meaning, but normalizing must
  // not drop or merge them.
  query q{{query_item{{"B"}, {}}, query_item{{"A"}, {}}}};
  dcbd::normalize(q);
  ASSERT_EQ(q.items.size(), 2u);
  EXPECT_EQ(q.items[0].types, (std::vector<std::string>{"B"}));
  EXPECT_EQ(q.items[1].types, (std::vector<std::string>{"A"}));
  auto all = query::all();
  dcbd::normalize(all);
  EXPECT_TRUE(all.matches_all());
}

TEST(Normalize, MakesMatchingIndependentOfInputOrder) {
  // Unsorted input with duplicates matches like its normalized form.
  query q{{query_item{{"T"}, {"c", "a", "c"}}}};
  event e{"T", {"c", "b", "a", "a"}, {}, {}};
  dcbd::normalize(q);
  dcbd::normalize(e);
  EXPECT_TRUE(dcbd::matches(q, e));
  event f{"T", {"c", "b", "b"}, {}, {}};
  dcbd::normalize(f);
  EXPECT_FALSE(dcbd::matches(q, f));
}

// -- error names -------------------------------------------------------------

TEST(ErrorCode, HasStableNames) {
  EXPECT_EQ(dcbd::to_string(errc::none), "none");
  EXPECT_EQ(dcbd::to_string(errc::invalid_argument), "invalid_argument");
  EXPECT_EQ(dcbd::to_string(errc::append_condition_failed),
            "append_condition_failed");
  EXPECT_EQ(dcbd::to_string(errc::overloaded), "overloaded");
  EXPECT_EQ(dcbd::to_string(errc::unavailable), "unavailable");
  EXPECT_EQ(dcbd::to_string(errc::internal), "internal");
}

TEST(ErrorCode, HasStableNumbers) {
  // Part of the wire format.
  EXPECT_EQ(static_cast<int>(errc::none), 0);
  EXPECT_EQ(static_cast<int>(errc::invalid_argument), 1);
  EXPECT_EQ(static_cast<int>(errc::append_condition_failed), 2);
  EXPECT_EQ(static_cast<int>(errc::overloaded), 3);
  EXPECT_EQ(static_cast<int>(errc::unavailable), 4);
  EXPECT_EQ(static_cast<int>(errc::internal), 5);
}

TEST(ErrorCode, StoreErrorCarriesCodeAndMessage) {
  dcbd::store_error err{errc::overloaded, "queue full"};
  EXPECT_EQ(err.code(), errc::overloaded);
  EXPECT_STREQ(err.what(), "queue full");
  const std::runtime_error& base = err;
  EXPECT_STREQ(base.what(), "queue full");
}

TEST(AppendResult, OkOnlyWithoutError) {
  dcbd::append_result ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.last_position, 0u);
  dcbd::append_result failed{errc::append_condition_failed, 0, "conflict"};
  EXPECT_FALSE(failed.ok());
}

} // namespace
