// Bad input over both stores: every invalid case of DESIGN §2 is rejected
// with `invalid_argument`, with a message naming the field, and nothing is
// written (validate() itself: validation_test.cpp).
#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/model.hpp"
#include "store/validation.hpp"
#include "tests/store/input_cases.hpp"
#include "tests/support/pg_fixture.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using dcbd::append_condition;
using dcbd::append_request;
using dcbd::event;
using dcbd::query;
using dcbd::query_item;
using dcbd::read_options;
using dcbd::store_error;
using namespace dcbd::test;

// -- typed tests over both stores -------------------------------------------

template <class Factory>
class BadInput : public dcbd::test::StoreTest<Factory> {
protected:
  void SetUp() override {
    dcbd::test::StoreTest<Factory>::SetUp();
    // One valid event, so that "nothing was written" is observable.
    ASSERT_EQ(store().append({make_event("Seed", {"k:v"})}), 1u);
  }

  dcbd::event_store& store() {
    return *this->store_;
  }

  // Checks that the store still holds exactly the seed event.
  void expect_unchanged() {
    EXPECT_EQ(store().head(), 1u);
    auto all = store().read(query::all());
    EXPECT_EQ(all.head, 1u);
    ASSERT_EQ(all.events.size(), 1u);
    EXPECT_EQ(all.events[0].event.type, "Seed");
  }

  // Checks that appending `events` (with `condition`) is rejected naming
  // `field`, both by `append` and by `append_group` (where a valid request
  // of the same group still succeeds), and that only the valid request was
  // written.
  void expect_rejected(std::vector<event> events,
                       std::optional<append_condition> condition,
                       std::string_view field) {
    {
      SCOPED_TRACE("append");
      expect_invalid(
        [&] {
          store().append(events, condition);
        },
        field);
      expect_unchanged();
    }
    if (this->HasFailure())
      return;
    SCOPED_TRACE("append_group");
    std::vector<append_request> group;
    group.push_back(append_request{{make_event("Before")}, std::nullopt});
    group.push_back(append_request{std::move(events), std::move(condition)});
    group.push_back(append_request{{make_event("After1"), make_event("After2")},
                                   append_condition{query::all(), 2}});
    auto results = store().append_group(std::move(group));
    ASSERT_EQ(results.size(), 3u);
    EXPECT_EQ(dcbd::to_string(results[0].code), "none") << results[0].message;
    EXPECT_EQ(results[0].last_position, 2u);
    EXPECT_EQ(dcbd::to_string(results[1].code), "invalid_argument")
      << results[1].message;
    EXPECT_FALSE(results[1].ok());
    EXPECT_EQ(results[1].last_position, 0u);
    EXPECT_TRUE(contains(results[1].message, field))
      << "message \"" << results[1].message << "\" does not name " << field;
    // The invalid request wrote nothing, so the third one's condition (no
    // event after 2) holds.
    EXPECT_EQ(dcbd::to_string(results[2].code), "none") << results[2].message;
    EXPECT_EQ(results[2].last_position, 4u);
    auto all = store().read(query::all());
    EXPECT_EQ(all.head, 4u);
    std::vector<std::string> types;
    for (const auto& e : all.events)
      types.push_back(e.event.type);
    EXPECT_EQ(types,
              (std::vector<std::string>{"Seed", "Before", "After1", "After2"}));
  }

  // Checks that an event list is accepted and round-trips.
  void expect_accepted(std::vector<event> events) {
    auto expected = events;
    auto before = store().head();
    std::uint64_t last = 0;
    ASSERT_NO_THROW(last = store().append(events));
    EXPECT_EQ(last, before + expected.size());
    auto back = store().read(query::all(), read_options{before + 1, {}, false});
    ASSERT_EQ(back.events.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      dcbd::normalize(expected[i]);
      EXPECT_EQ(back.events[i].event, expected[i]) << "event " << i;
    }
  }

  // Checks that reading and streaming with `q` and `opts` are rejected
  // naming `field`.
  void expect_read_rejected(const query& q, const read_options& opts,
                            std::string_view field) {
    {
      SCOPED_TRACE("read");
      expect_invalid(
        [&] {
          store().read(q, opts);
        },
        field);
    }
    {
      SCOPED_TRACE("stream");
      expect_invalid(
        [&] {
          // Validation may happen when the stream opens or on first use.
          auto s = store().stream(q, opts, {});
          std::vector<dcbd::sequenced_event> chunk;
          while (s->next(chunk)) {
            // drain
          }
        },
        field);
    }
    expect_unchanged();
  }
};

TYPED_TEST_SUITE(BadInput, dcbd::test::store_kinds,
                 dcbd::test::store_kind_names);

TYPED_TEST(BadInput, EmptyEventList) {
  this->expect_rejected({}, std::nullopt, "events");
}

TYPED_TEST(BadInput, EmptyEventListWithCondition) {
  this->expect_rejected({}, append_condition{query::all(), 0}, "events");
}

TYPED_TEST(BadInput, TooManyEvents) {
  std::vector<event> events(dcbd::limits{}.max_events_per_append + 1,
                            make_event("T"));
  this->expect_rejected(std::move(events), std::nullopt, "events");
}

TYPED_TEST(BadInput, EmptyType) {
  this->expect_rejected({make_event("A"), make_event("")}, std::nullopt,
                        "events[1].type");
}

TYPED_TEST(BadInput, TypeOf256Bytes) {
  this->expect_rejected({make_event("A"), make_event(bytes_of(256))},
                        std::nullopt, "events[1].type");
}

TYPED_TEST(BadInput, TypeOf255BytesIsAccepted) {
  this->expect_accepted({make_event(bytes_of(255, 't'))});
  // 255 bytes of multi-byte UTF-8 (85 three-byte characters).
  std::string euros;
  for (int i = 0; i < 85; ++i)
    euros += "\xe2\x82\xac";
  ASSERT_EQ(euros.size(), 255u);
  this->expect_accepted({make_event(euros)});
}

TYPED_TEST(BadInput, TypeWithNul) {
  this->expect_rejected({make_event(nul_string)}, std::nullopt,
                        "events[0].type");
}

TYPED_TEST(BadInput, TypeWithInvalidUtf8) {
  this->expect_rejected({make_event("A"), make_event("B"),
                         make_event(bad_utf8)},
                        std::nullopt, "events[2].type");
}

TYPED_TEST(BadInput, TypeWithSurrogate) {
  this->expect_rejected({make_event("\xed\xa0\x80")}, std::nullopt,
                        "events[0].type");
}

TYPED_TEST(BadInput, EmptyTag) {
  // The index is the tag's place in the request, before tags are sorted
  // (sorted, "" would come first).
  this->expect_rejected({make_event("A", {"b", "c", ""})}, std::nullopt,
                        "events[0].tags[2]");
}

TYPED_TEST(BadInput, TagOf256Bytes) {
  this->expect_rejected({make_event("A", {"k:v"}),
                         make_event("B", {"x", bytes_of(256)})},
                        std::nullopt, "events[1].tags[1]");
}

TYPED_TEST(BadInput, TagOf255BytesIsAccepted) {
  this->expect_accepted({make_event("A", {bytes_of(255, 'g'), "k:v"})});
}

TYPED_TEST(BadInput, TagWithNul) {
  this->expect_rejected({make_event("A", {"k:1", "k:2", nul_string})},
                        std::nullopt, "events[0].tags[2]");
}

TYPED_TEST(BadInput, TagWithInvalidUtf8) {
  this->expect_rejected({make_event("A", {"z", bad_utf8})}, std::nullopt,
                        "events[0].tags[1]");
}

TYPED_TEST(BadInput, TagWithOverlongEncoding) {
  // "\xc0\xaf" is an overlong '/'.
  this->expect_rejected({make_event("A", {"a\xc0\xaf"})}, std::nullopt,
                        "events[0].tags[0]");
}

TYPED_TEST(BadInput, PayloadOverOneMebibyte) {
  // Neither field alone exceeds the limit; their sum does.
  event e = make_event("Big");
  e.data = bytes_of(mib / 2, '\xff');
  e.metadata = bytes_of(mib / 2 + 1, '\0');
  this->expect_rejected({make_event("Small"), std::move(e)}, std::nullopt,
                        "events[1].data");
}

TYPED_TEST(BadInput, DataOverOneMebibyte) {
  event e = make_event("Big");
  e.data = bytes_of(mib + 1);
  this->expect_rejected({std::move(e)}, std::nullopt, "events[0].data");
}

TYPED_TEST(BadInput, PayloadOfExactlyOneMebibyteIsAccepted) {
  event e = make_event("Big", {"k:v"});
  e.data = bytes_of(mib - 100, '\0');
  e.data[1] = '\xff';
  e.metadata = bytes_of(100, '\x01');
  this->expect_accepted({std::move(e)});
  event f = make_event("Big");
  f.data = bytes_of(mib, 'd');
  f.metadata.clear();
  this->expect_accepted({std::move(f)});
}

TYPED_TEST(BadInput, MoreThanOneThousandTags) {
  this->expect_rejected({make_event("A", many_tags(1001))}, std::nullopt,
                        "events[0].tags");
}

TYPED_TEST(BadInput, OneThousandTagsAreAccepted) {
  this->expect_accepted({make_event("A", many_tags(1000))});
}

TYPED_TEST(BadInput, ConditionItemWithoutTypesOrTags) {
  this->expect_rejected({make_event("A")}, condition_with(query_item{}),
                        "condition.fail_if_events_match.items[0]");
}

TYPED_TEST(BadInput, ConditionSecondItemWithoutTypesOrTags) {
  append_condition cond{query{{query_item{{"A"}, {}}, query_item{}}}, 0};
  this->expect_rejected({make_event("A")}, cond,
                        "condition.fail_if_events_match.items[1]");
}

TYPED_TEST(BadInput, ConditionItemWithEmptyType) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{"A", ""}, {}}),
                        "condition.fail_if_events_match.items[0].types[1]");
}

TYPED_TEST(BadInput, ConditionItemWithEmptyTag) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{}, {"k:v", ""}}),
                        "condition.fail_if_events_match.items[0].tags[1]");
}

TYPED_TEST(BadInput, ConditionItemWithNulType) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{nul_string}, {}}),
                        "condition.fail_if_events_match.items[0].types[0]");
}

TYPED_TEST(BadInput, ConditionItemWithInvalidUtf8Tag) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{}, {bad_utf8}}),
                        "condition.fail_if_events_match.items[0].tags[0]");
}

TYPED_TEST(BadInput, ConditionItemWithOversizedType) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{bytes_of(256)}, {}}),
                        "condition.fail_if_events_match.items[0].types[0]");
}

TYPED_TEST(BadInput, ConditionWithTooManyItems) {
  query q;
  for (int i = 0; i < 1001; ++i)
    q.items.push_back(query_item{{"T" + std::to_string(i)}, {}});
  this->expect_rejected({make_event("A")}, append_condition{q, {}},
                        "condition.fail_if_events_match.items");
}

TYPED_TEST(BadInput, ConditionAfterBeyondInt64Max) {
  this->expect_rejected({make_event("A")},
                        append_condition{query::all(), int64_max + 1},
                        "condition.after");
}

TYPED_TEST(BadInput, ConditionAfterUint64Max) {
  this->expect_rejected(
    {make_event("A")},
    append_condition{query::all(), std::numeric_limits<std::uint64_t>::max()},
    "condition.after");
}

TYPED_TEST(BadInput, ConditionAfterOfInt64MaxIsAccepted) {
  // Nothing can come after the largest position, so the condition holds.
  EXPECT_EQ(this->store().append({make_event("A")},
                                 append_condition{query::all(), int64_max}),
            2u);
}

TYPED_TEST(BadInput, ReadWithItemWithoutTypesOrTags) {
  this->expect_read_rejected(query{{query_item{{"A"}, {}}, query_item{}}}, {},
                             "query.items[1]");
}

TYPED_TEST(BadInput, ReadWithEmptyType) {
  this->expect_read_rejected(query{{query_item{{""}, {}}}}, {},
                             "query.items[0].types[0]");
}

TYPED_TEST(BadInput, ReadWithEmptyTag) {
  this->expect_read_rejected(query{{query_item{{"A"}, {"a", ""}}}}, {},
                             "query.items[0].tags[1]");
}

TYPED_TEST(BadInput, ReadWithNulTag) {
  this->expect_read_rejected(query{{query_item{{}, {nul_string}}}}, {},
                             "query.items[0].tags[0]");
}

TYPED_TEST(BadInput, ReadWithInvalidUtf8Type) {
  this->expect_read_rejected(query{{query_item{{bad_utf8}, {}}}}, {},
                             "query.items[0].types[0]");
}

TYPED_TEST(BadInput, ReadWithTooManyItemValues) {
  query_item item;
  item.types = many_tags(600);
  item.tags = many_tags(401);
  this->expect_read_rejected(query{{item}}, {}, "query.items[0]");
}

TYPED_TEST(BadInput, ReadFromBeyondInt64Max) {
  this->expect_read_rejected(
    query::all(), read_options{int64_max + 1, {}, false}, "options.from");
  this->expect_read_rejected(
    query::all(), read_options{int64_max + 1, {}, true}, "options.from");
  this->expect_read_rejected(
    query{{query_item{{"Seed"}, {}}}},
    read_options{std::numeric_limits<std::uint64_t>::max(), 1, false},
    "options.from");
}

TYPED_TEST(BadInput, ReadFromInt64MaxIsAccepted) {
  auto fwd = this->store().read(query::all(),
                                read_options{int64_max, {}, false});
  EXPECT_TRUE(fwd.events.empty());
  EXPECT_EQ(fwd.head, 1u);
  auto bwd = this->store().read(query::all(),
                                read_options{int64_max, {}, true});
  ASSERT_EQ(bwd.events.size(), 1u);
  EXPECT_EQ(bwd.events[0].position, 1u);
}

TYPED_TEST(BadInput, GroupOfOnlyInvalidRequestsWritesNothing) {
  std::vector<append_request> group;
  group.push_back(append_request{{}, std::nullopt});
  group.push_back(append_request{{make_event("")}, std::nullopt});
  group.push_back(
    append_request{{make_event("A")}, condition_with(query_item{})});
  auto results = this->store().append_group(std::move(group));
  ASSERT_EQ(results.size(), 3u);
  const char* fields[] = {"events", "events[0].type",
                          "condition.fail_if_events_match.items[0]"};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(dcbd::to_string(results[i].code), "invalid_argument") << i;
    EXPECT_EQ(results[i].last_position, 0u) << i;
    EXPECT_TRUE(contains(results[i].message, fields[i]))
      << i << ": " << results[i].message;
  }
  this->expect_unchanged();
}

TYPED_TEST(BadInput, StoreStaysUsableAfterRejections) {
  for (int i = 0; i < 3; ++i)
    expect_invalid(
      [&] {
        this->store().append({make_event("")});
      },
      "events[0].type");
  EXPECT_EQ(this->store().append({make_event("Next")}), 2u);
  EXPECT_EQ(this->store().head(), 2u);
}

} // namespace
