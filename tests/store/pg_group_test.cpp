// Flattening a group into the statement's arrays, and finding in-group
// dependencies: pure logic, no database.
#include "store/pg_group.hpp"

#include "store/error.hpp"

#include <gtest/gtest.h>

namespace dcbd::pg {
namespace {

validated_append req(std::vector<event> events,
                     std::optional<append_condition> cond = std::nullopt) {
  return validate_append(append_request{std::move(events), std::move(cond)},
                         limits{});
}

query tags(std::vector<std::string> ts) {
  return query{{query_item{{}, std::move(ts)}}};
}

std::vector<std::size_t> all_of(const std::vector<validated_append>& g) {
  std::vector<std::size_t> part(g.size());
  for (std::size_t i = 0; i < part.size(); ++i)
    part[i] = i;
  return part;
}

TEST(ArrayBuilder, QuotesAndEscapesStringsAndSeparatesElements) {
  array_builder ints;
  EXPECT_EQ(ints.str(), "{}");
  ints.add(std::int64_t{3});
  ints.add(std::int64_t{-1});
  EXPECT_EQ(ints.str(), "{3,-1}");
  array_builder strs;
  strs.add(std::string_view{"a"});
  strs.add(std::string_view{"b\"c\\d"});
  strs.add(std::string_view{""});
  EXPECT_EQ(strs.str(), R"({"a","b\"c\\d",""})");
}

TEST(GroupFlatten, UnconditionalGroupHasOffsetsPayloadsAndLastEvents) {
  std::vector<validated_append> g;
  g.push_back(req({event{"A", {"t:2", "t:1"}, "xy", "m"}}));
  g.push_back(req({event{"B", {}, "z", ""}, event{"C", {"t:1"}, "", "nn"}}));
  auto a = flatten(g, all_of(g));
  EXPECT_FALSE(a.conditional);
  EXPECT_EQ(a.req_kind.str(), "{0,0}");
  EXPECT_EQ(a.req_nev.str(), "{1,2}");
  EXPECT_EQ(a.req_last_event.str(), "{1,3}");
  EXPECT_EQ(a.ev_req.str(), "{1,2,2}");
  EXPECT_EQ(a.ev_idx.str(), "{0,0,1}");
  EXPECT_EQ(a.ev_type.str(), R"({"A","B","C"})");
  // Tags in their stored (sorted) form, offsets 1-based.
  EXPECT_EQ(a.tags.str(), R"({"t:1","t:2","t:1"})");
  EXPECT_EQ(a.ev_tag_off.str(), "{1,3,3}");
  EXPECT_EQ(a.ev_tag_cnt.str(), "{2,0,1}");
  EXPECT_EQ(a.data, "xyz");
  EXPECT_EQ(a.ev_data_off.str(), "{1,3,4}");
  EXPECT_EQ(a.ev_data_len.str(), "{2,1,0}");
  EXPECT_EQ(a.meta, "mnn");
  EXPECT_EQ(a.ev_meta_off.str(), "{1,2,2}");
  EXPECT_EQ(a.ev_meta_len.str(), "{1,0,2}");
  EXPECT_EQ(a.dep_req.str(), "{}");
}

TEST(GroupFlatten, ConditionItemsAndDependenciesOnEarlierRequests) {
  std::vector<validated_append> g;
  g.push_back(req({event{"A", {"x"}}, event{"A", {"x"}}, event{"A", {"y"}}}));
  g.push_back(req({event{"B", {"y"}}}));
  g.push_back(
    req({event{"C", {"z"}}},
        append_condition{
          query{{query_item{{"A"}, {"x"}}, query_item{{}, {"y"}}}}, 5}));
  g.push_back(req({event{"D", {"w"}}}, append_condition{query::all(), {}}));
  auto a = flatten(g, all_of(g));
  EXPECT_TRUE(a.conditional);
  EXPECT_EQ(a.req_kind.str(), "{0,0,1,2}");
  EXPECT_EQ(a.req_after.str(), "{0,0,5,0}");
  EXPECT_EQ(a.it_req.str(), "{3,3}");
  EXPECT_EQ(a.it_types.str(), R"({"A"})");
  EXPECT_EQ(a.it_type_cnt.str(), "{1,0}");
  EXPECT_EQ(a.it_tags.str(), R"({"x","y"})");
  EXPECT_EQ(a.it_tag_off.str(), "{1,2}");
  // Request 3 depends on request 1 through its last match (index 2: the
  // "y" event) and on request 2 (index 0); request 4 matches everything,
  // so it depends on the last event of every earlier request.
  EXPECT_EQ(a.dep_req.str(), "{3,3,4,4,4}");
  EXPECT_EQ(a.dep_on.str(), "{1,2,1,2,3}");
  EXPECT_EQ(a.dep_off.str(), "{2,0,2,0,0}");
}

// What append_prechecked was told: an item condition's `after` rises to
// the position it is clean through, never falls; a condition matching
// everything (its check is `head > after`) and an unconditional request
// keep theirs, as do the dependencies, which compare `after` with
// positions past the head only.
TEST(GroupFlatten, CheckedThroughRaisesTheAfterOfItemConditionsOnly) {
  std::vector<validated_append> g;
  g.push_back(req({event{"A", {"x"}}}, append_condition{tags({"x"}), 5}));
  g.push_back(req({event{"B", {"x"}}}, append_condition{tags({"x"}), 9}));
  g.push_back(req({event{"C", {"y"}}}, append_condition{query::all(), 2}));
  g.push_back(req({event{"D", {"z"}}}));
  g.push_back(req({event{"E", {"x"}}}, append_condition{tags({"x"}), {}}));
  std::vector<std::uint64_t> clean{7, 7, 7, 7, 7};
  EXPECT_EQ(flatten(g, all_of(g), clean).req_after.str(), "{7,9,2,0,7}");
  EXPECT_EQ(flatten(g, all_of(g)).req_after.str(), "{5,9,2,0,0}");
  // Indexed by request in the group, not in the part.
  std::vector<std::uint64_t> by_request{0, 20, 0, 0, 30};
  auto a = flatten(g, {1, 4}, by_request);
  EXPECT_EQ(a.req_after.str(), "{20,30}");
  EXPECT_EQ(a.dep_req.str(), "{2}") << "E still depends on B";
  EXPECT_EQ(a.dep_on.str(), "{1}");
}

TEST(GroupFlatten, PartNumbersRequestsInPartOrder) {
  std::vector<validated_append> g;
  g.push_back(req({event{"A", {"k"}}}));
  g.push_back(req({event{"B", {"k"}}}));
  g.push_back(req({event{"C", {"k"}}}, append_condition{tags({"k"}), 0}));
  auto a = flatten(g, {1, 2});
  EXPECT_EQ(a.ev_type.str(), R"({"B","C"})");
  // Only request "B" (now number 1) came before "C" in this part.
  EXPECT_EQ(a.dep_req.str(), "{2}");
  EXPECT_EQ(a.dep_on.str(), "{1}");
}

TEST(ArrayBuilder, AddsNullsUnquoted) {
  array_builder xs;
  xs.add_null();
  xs.add(std::string_view{"NULL"});
  xs.add_null();
  EXPECT_EQ(xs.str(), R"({NULL,"NULL",NULL})");
}

TEST(GroupFlatten, JobsListTheirRequestsAndFields) {
  std::vector<validated_append> g;
  g.push_back(req({event{"A", {"k"}}}));
  EXPECT_FALSE(flatten(g, all_of(g)).has_jobs);
  job_request plain;
  plain.kind = "k1";
  job_request full;
  full.queue = "mail";
  full.kind = "k\"2";
  full.args = R"({"a":1})";
  full.priority = 7;
  full.run_at_us = 1'800'000'000'000'000;
  full.max_attempts = 3;
  full.unique_key = "u";
  job_request delayed;
  delayed.kind = "k3";
  delayed.delay_ms = 250;
  g.push_back(validate_append(append_request{{event{"B", {}}},
                                             append_condition{tags({"k"}), 0},
                                             {plain, full}},
                              limits{}));
  g.push_back(validate_append(
    append_request{{event{"C", {}}}, std::nullopt, {delayed}}, limits{}));
  auto a = flatten(g, all_of(g));
  EXPECT_TRUE(a.has_jobs);
  EXPECT_EQ(a.job_req.str(), "{2,2,3}");
  EXPECT_EQ(a.job_queue.str(), R"({"default","mail","default"})");
  EXPECT_EQ(a.job_kind.str(), R"({"k1","k\"2","k3"})");
  // Validation makes empty args "{}".
  EXPECT_EQ(a.job_args.str(), R"({"{}","{\"a\":1}","{}"})");
  EXPECT_EQ(a.job_priority.str(), "{1,7,1}");
  EXPECT_EQ(a.job_run_at.str(), "{NULL,1800000000000000,NULL}");
  EXPECT_EQ(a.job_delay.str(), "{0,0,250}");
  EXPECT_EQ(a.job_max_attempts.str(), "{20,3,20}");
  EXPECT_EQ(a.job_unique_key.str(), R"({NULL,"u",NULL})");
  // A part numbers the jobs' requests in part order.
  EXPECT_EQ(flatten(g, {2}).job_req.str(), "{1}");
}

TEST(GroupIndex, FindsTheLastMatchPerEarlierRequestOnly) {
  std::vector<event> r0{event{"A", {"x", "y"}}, event{"B", {"x"}}};
  std::vector<event> r1{event{"A", {"y"}}};
  group_index idx;
  idx.add(0, r0);
  idx.add(1, r1);
  using matches = std::vector<std::pair<std::size_t, std::size_t>>;
  EXPECT_EQ(idx.last_matches(tags({"x"})), (matches{{0, 1}}));
  EXPECT_EQ(idx.last_matches(tags({"y"})), (matches{{0, 0}, {1, 0}}));
  EXPECT_EQ(idx.last_matches(tags({"x", "y"})), (matches{{0, 0}}));
  EXPECT_EQ(idx.last_matches(query{{query_item{{"A"}, {}}}}),
            (matches{{0, 0}, {1, 0}}));
  EXPECT_EQ(idx.last_matches(query{{query_item{{"B"}, {"y"}}}}), matches{});
  EXPECT_EQ(idx.last_matches(tags({"nowhere"})), matches{});
}

TEST(ParseIntArray, ParsesPostgresArraysAndRefusesOtherText) {
  EXPECT_EQ(parse_int_array("{}"), std::vector<std::int64_t>{});
  EXPECT_EQ(parse_int_array("{3,0,-7}"), (std::vector<std::int64_t>{3, 0, -7}));
  EXPECT_THROW(parse_int_array("3,0"), dcbd::store_error);
  EXPECT_THROW(parse_int_array(""), dcbd::store_error);
}

} // namespace
} // namespace dcbd::pg
